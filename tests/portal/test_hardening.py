"""The dashboard behind a proxy and under attack (portal.md, "Behind a proxy, and under
attack"; issue 21): https through a trusted proxy, a secret that outlives a restart, the
day's limits and the guessing alert, bounded bodies and codes, sweeps through indexes,
sessions that end 12 hours after sign-in, and POSTs without Origin taken only as JSON.

What is about HTTP runs against `prakerja portal` as its own process over a small
announced wave (conftest.small_portal_wave), on SQLite and PostgreSQL; the store's rules
run on both databases with the store's own clock; the code sender with a gateway that
stops answering.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import requests
from sqlalchemy import create_engine, text

from models import names
from portal import store as store_module
from portal.store import Store, make_portal_engine
from tests.portal.conftest import (
    PortalProcess,
    nik_key,
    sign_in,
    start_portal,
    stop_portal,
)

T = 10  # seconds, for every HTTP call
COOKIE = "prakerja_session"
JSON = "application/json"
HTTPS = {"X-Forwarded-Proto": "https"}
PROXY = ("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")
TOO_MANY = {"error": "too_many_requests"}
DAY = 24 * 3600


# ---------------------------------------------------------------------- fixtures
class People:
    """The small wave's registrants, each handed to one test only (the limits are per
    NIK and the module shares one database), and strangers nobody registered."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self._rows = list(rows)
        self._strangers = 0

    def take(self) -> dict[str, str]:
        return self._rows.pop(0)

    def stranger(self) -> str:
        self._strangers += 1
        return f"320101150590{9000 + self._strangers:04d}"


@pytest.fixture(scope="module")
def wave(small_portal_wave):
    return small_portal_wave[0]


@pytest.fixture(scope="module")
def people(small_portal_wave) -> People:
    return People(small_portal_wave[1])


@pytest.fixture(scope="module")
def portal(wave):
    p = start_portal(wave, workers=1)
    yield p
    stop_portal(p)


@contextmanager
def database(url: str):
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": 30} if sqlite else {})
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def post(p: PortalProcess, path: str, body=None, **headers) -> requests.Response:
    return requests.post(
        p.base_url + path, json=body, headers={"Connection": "close", **headers}, timeout=T
    )


def ask_code(p: PortalProcess, nik: str, **headers) -> requests.Response:
    return post(p, "/api/login", {"nik": nik}, **headers)


def verify(p: PortalProcess, nik: str, code: str, **headers) -> requests.Response:
    return post(p, "/api/login/verify", {"nik": nik, "code": code}, **headers)


def new_code(p: PortalProcess, row: dict[str, str], **headers) -> str:
    after = p.latest_code_seq()
    r = ask_code(p, row["nik"], **headers)
    assert r.status_code == 202, r.text
    code = p.code_sent_to(row["phone"], after)
    assert code is not None, "the gateway received no code"
    return code


def wrong(code: str, k: int = 1) -> str:
    return f"{(int(code) + k) % 1_000_000:06d}"


def cookie_attributes(r: requests.Response) -> set[str]:
    """The attribute names of the response's Set-Cookie, lower-cased."""
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "="), cookie
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


def set_guard_times(url: str, nik: str, column: str, times: list[float]) -> None:
    """Writes a NIK's guard row as if its requests or failures had come at `times`."""
    with database(url) as conn:
        changed = conn.execute(
            text(f"UPDATE login_guard SET {column} = :v WHERE key = :k"),
            {"v": ",".join(f"{t:.3f}" for t in times), "k": nik_key(nik)},
        ).rowcount
    assert changed == 1


def aged(n: int, now: float) -> list[float]:
    """n times spread over the last 23 hours, none in the last 15 minutes."""
    return [now - 23 * 3600 + k * 60 for k in range(n)]


# ---------------------------------------------------------------------- 1. https
def test_behind_a_trusted_proxy_https_gets_hsts_and_a_secure_cookie(wave, people):
    p = start_portal(wave, workers=1, args=PROXY)
    try:
        r = requests.get(p.base_url + "/", headers=HTTPS, timeout=T)
        assert r.headers.get("Strict-Transport-Security") == "max-age=31536000"
        r = requests.get(p.base_url + "/static/style.css", headers=HTTPS, timeout=T)
        assert r.headers.get("Strict-Transport-Security") == "max-age=31536000"
        plain = requests.get(p.base_url + "/", timeout=T)
        assert "Strict-Transport-Security" not in plain.headers

        row = people.take()
        code = new_code(p, row, **HTTPS)
        r = verify(p, row["nik"], code, **HTTPS)
        assert r.status_code == 200
        assert "secure" in cookie_attributes(r)
        assert r.headers.get("Strict-Transport-Security") == "max-age=31536000"
        # The browser's origin is https now: the portal's own pages still pass.
        origin = "https://" + p.base_url.removeprefix("http://")
        r = requests.post(
            p.base_url + "/api/logout",
            cookies={COOKIE: r.cookies[COOKIE]},
            headers={"Origin": origin, **HTTPS},
            timeout=T,
        )
        assert r.status_code == 204 and "secure" in cookie_attributes(r)

        # Served on loopback but behind a proxy: Secure whatever the scheme said.
        row = people.take()
        r = verify(p, row["nik"], new_code(p, row))
        assert r.status_code == 200 and "secure" in cookie_attributes(r)
        assert "Strict-Transport-Security" not in r.headers
    finally:
        stop_portal(p)


def test_insecure_cookie_drops_secure_over_plain_http_only(wave, people):
    p = start_portal(wave, workers=1, args=(*PROXY, "--insecure-cookie"))
    try:
        row = people.take()
        r = verify(p, row["nik"], new_code(p, row))
        assert r.status_code == 200 and "secure" not in cookie_attributes(r)
        row = people.take()
        r = verify(p, row["nik"], new_code(p, row, **HTTPS), **HTTPS)
        assert r.status_code == 200 and "secure" in cookie_attributes(r)
        assert r.headers.get("Strict-Transport-Security") == "max-age=31536000"
    finally:
        stop_portal(p)


def test_without_proxy_headers_a_forwarded_scheme_is_ignored(portal, people):
    r = requests.get(portal.base_url + "/", headers=HTTPS, timeout=T)
    assert "Strict-Transport-Security" not in r.headers
    row = people.take()
    r = verify(portal, row["nik"], new_code(portal, row, **HTTPS), **HTTPS)
    assert r.status_code == 200
    assert "secure" not in cookie_attributes(r)
    assert "Strict-Transport-Security" not in r.headers


def test_off_loopback_the_cookie_is_secure_even_over_plain_http(wave, people):
    p = start_portal(wave, workers=1, args=("--host", "0.0.0.0"))
    try:
        row = people.take()
        r = verify(p, row["nik"], new_code(p, row))
        assert r.status_code == 200 and "secure" in cookie_attributes(r)
        assert "Strict-Transport-Security" not in r.headers  # not https: HSTS means nothing
    finally:
        stop_portal(p)


def test_forwarded_allow_ips_without_proxy_headers_is_refused(wave):
    import subprocess
    import sys

    from tests.portal.conftest import ROOT

    r = subprocess.run(
        [sys.executable, "-m", "cli", "portal", "--port", "1", "--forwarded-allow-ips", "10.0.0.1"],
        cwd=ROOT, env=wave.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "--proxy-headers" in r.stderr


# ---------------------------------------------------------------------- 2. the secret
def test_without_the_variable_the_kept_secret_outlives_a_restart(wave, people):
    """Limits and codes survive a restart: the secret is the database's, not the process's."""
    unset = {"PRAKERJA_PORTAL_SECRET": ""}
    row = people.take()
    p = start_portal(wave, workers=1, extra_env=unset)
    try:
        for _ in range(2):
            assert ask_code(p, row["nik"]).status_code == 202
        code = new_code(p, row)  # the third
    finally:
        stop_portal(p)
    p = start_portal(wave, workers=1, extra_env=unset)
    try:
        r = ask_code(p, row["nik"])
        assert (r.status_code, r.json()) == (429, TOO_MANY)
        r = verify(p, row["nik"], code)
        assert r.status_code == 200 and COOKIE in r.cookies
    finally:
        stop_portal(p)
    with database(wave.database_url) as conn:
        kept = conn.execute(text("SELECT secret FROM portal_secret")).scalars().all()
    assert len(kept) == 1 and len(kept[0]) >= 32
    assert kept[0] not in p.log()


# ---------------------------------------------------------------------- 3. guessing
def test_ten_code_requests_a_day_then_429_for_registered_and_unregistered_alike(
    wave, portal, people
):
    known, stranger = people.take()["nik"], people.stranger()
    answers = {}
    for nik in (known, stranger):
        assert ask_code(portal, nik).status_code == 202  # its guard row
        set_guard_times(wave.database_url, nik, "requests", aged(9, time.time()))
        tenth = ask_code(portal, nik)
        assert (tenth.status_code, tenth.json()) == (202, {"status": "code_sent"})
        answers[nik] = ask_code(portal, nik)
    a, b = answers[known], answers[stranger]
    assert (a.status_code, a.json()) == (429, TOO_MANY)
    assert (b.status_code, b.json()) == (429, TOO_MANY)
    # Free again when the oldest of the ten is a day old: an hour from now, not 15 minutes.
    for r in (a, b):
        assert 3600 - 120 <= int(r.headers["Retry-After"]) <= 3600 + 2
    assert a.content == b.content


def test_twenty_wrong_codes_a_day_then_429_even_for_the_right_code(wave, portal, people):
    row = people.take()
    stranger = people.stranger()
    right = new_code(portal, row)
    assert ask_code(portal, stranger).status_code == 202
    answers = []
    for nik in (row["nik"], stranger):
        set_guard_times(wave.database_url, nik, "failures", aged(19, time.time()))
        r = verify(portal, nik, wrong(right))  # the 20th in 24 hours
        assert (r.status_code, r.json()) == (401, {"error": "invalid_code"})
        answers.append(verify(portal, nik, right))
    for r in answers:
        assert (r.status_code, r.json()) == (429, TOO_MANY)
        assert COOKIE not in r.cookies
        assert 3600 - 120 <= int(r.headers["Retry-After"]) <= 3600 + 2


@pytest.fixture
def clocked_store(database_url):
    """A Store on a fresh database whose clock the test moves."""
    clock = SimpleNamespace(now=1_800_000_000.0)
    engine = make_portal_engine(database_url)
    store = Store(engine, b"s" * 32, clock=lambda: clock.now)
    yield store, clock
    store.close()


def test_the_day_limits_hold_to_the_second_and_free_up_after_a_day(clocked_store):
    store, clock = clocked_store
    start = clock.now
    nik = "3171010101900001"
    for k in range(10):  # every 16 minutes: never 3 in 15 minutes
        clock.now = start + k * 16 * 60
        assert store.request_code(nik).allowed, k
    clock.now = start + 10 * 16 * 60
    refused = store.request_code(nik)
    assert not refused.allowed
    assert refused.retry_after == int(start + DAY - clock.now) + 1
    clock.now = start + DAY + 1  # the first is a day old: one more
    assert store.request_code(nik).allowed
    assert not store.request_code(nik).allowed

    other = "3171010101900002"
    clock.now = start
    code = store.request_code(other).code
    assert code is not None
    for k in range(20):  # 4 wrong codes every 16 minutes: never 5 in 15 minutes
        clock.now = start + (k // 4) * 16 * 60 + k % 4
        result = store.verify_code(other, wrong(code))
        assert (result.ok, result.locked) == (False, False), k
    locked = store.verify_code(other, code)
    assert locked.locked and locked.retry_after > 15 * 60
    clock.now = start + DAY + 1
    code = store.request_code(other).code
    assert code is not None and store.verify_code(other, code).ok


def test_five_wrong_codes_still_lock_for_15_minutes_then_count_afresh(clocked_store):
    store, clock = clocked_store
    nik = "3171010101900003"
    code = store.request_code(nik).code
    assert code is not None
    for k in range(1, 6):
        assert not store.verify_code(nik, wrong(code, k)).locked
    locked = store.verify_code(nik, code)
    assert locked.locked and not locked.ok and locked.retry_after == 15 * 60 + 1
    clock.now += 15 * 60 - 1
    assert store.verify_code(nik, code).locked
    clock.now += 1  # the lock is over, and with it the failures that set it
    fresh = store.request_code(nik).code
    assert fresh is not None and fresh != wrong(fresh)
    assert store.verify_code(nik, code if code != fresh else wrong(fresh)).locked is False
    assert store.verify_code(nik, fresh).ok  # every code before the lock was void


def test_guessing_raises_one_prefect_event_with_counts_only(prefect_server, wave, people):
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    since = datetime.now(UTC).isoformat()
    p = start_portal(
        wave,
        workers=2,
        extra_env={"PREFECT_API_URL": api, "PRAKERJA_PORTAL_GUESS_ALERT": "5"},
    )
    guessed = [people.take()["nik"] for _ in range(4)] + [people.stranger() for _ in range(4)]
    try:
        for nik in guessed:  # 16 wrong codes, 2 a NIK: above 5 in any one minute
            for k in (1, 2):
                assert verify(p, nik, f"{k:06d}").status_code == 401

        def guessing_events() -> list[dict]:
            r = requests.post(
                f"{api}/events/filter",
                json={
                    "filter": {
                        "event": {"name": [names.PORTAL_GUESSING]},
                        "occurred": {"since": since},
                        "order": "ASC",
                    },
                    "limit": 50,
                },
                timeout=T,
            )
            r.raise_for_status()
            return r.json()["events"]

        deadline = time.monotonic() + 30
        while not (events := guessing_events()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(events) == 1, events
        # More guessing on either worker within 10 minutes: no second event.
        for nik in guessed:
            assert verify(p, nik, "000003").status_code == 401
        time.sleep(3)
        assert len(guessing_events()) == 1
    finally:
        stop_portal(p)
    (event,) = events
    assert event["resource"]["prefect.resource.id"] == names.PORTAL_RESOURCE
    payload = event["payload"]
    assert set(payload) == {"failures_in_minute", "threshold", "minute_start", "quiet_minutes"}
    assert payload["threshold"] == 5 and payload["failures_in_minute"] > 5
    assert payload["quiet_minutes"] == 10
    stored = json.dumps(event)
    assert not [nik for nik in guessed if nik in stored]
    log = p.log()
    assert "wrong sign-in codes in a minute" in log
    assert not [nik for nik in guessed if nik in log]


def test_one_process_of_several_raises_the_guessing_alert_once_per_10_minutes(database_url):
    """Two stores over one database, as two portal processes: their wrong codes add up in
    the minute's count, and of both only one raises the alert, once per 10 minutes."""
    clock = SimpleNamespace(now=1_800_000_000.0)  # the start of a minute
    raised: list = []
    stores = [
        Store(
            make_portal_engine(database_url),
            b"s" * 32,
            clock=lambda: clock.now,
            guess_alert=5,
            on_guessing=raised.append,
        )
        for _ in range(2)
    ]
    niks = (f"31710101019{n:05d}" for n in range(100))

    def guess(times: int) -> None:
        for k in range(times):  # a NIK each: no lock, every one a wrong code
            assert not stores[k % 2].verify_code(next(niks), "000000").ok
        for store in stores:
            store.flush_failures()

    try:
        guess(5)
        assert raised == []  # 5 is not above 5
        guess(1)
        assert len(raised) == 1
        assert raised[0].payload() == {
            "failures_in_minute": 6,
            "threshold": 5,
            "minute_start": "2027-01-15T08:00:00+00:00",
            "quiet_minutes": 10,
        }
        clock.now += 9 * 60  # a new minute, guessed as hard: not 10 minutes yet
        guess(12)
        assert len(raised) == 1
        clock.now += 60
        guess(6)
        assert len(raised) == 2 and raised[1].failures == 6
    finally:
        for store in stores:
            store.close()


def test_ops_setup_turns_the_guessing_event_into_a_notification():
    from deployments.automations import ALERTS, automation_name
    from tests.ops.test_ops_units import _event, _render

    (alert,) = [a for a in ALERTS if a.expect == (names.PORTAL_GUESSING,)]
    assert alert.match == {"prefect.resource.id": names.PORTAL_RESOURCE}
    assert automation_name(alert) == "prakerja: portal guessing"
    payload = {
        "failures_in_minute": 1234,
        "threshold": 300,
        "minute_start": "2026-12-08T01:02:00+00:00",
        "quiet_minutes": 10,
    }
    event = _event(names.PORTAL_GUESSING, payload, {"prefect.resource.id": "prakerja.portal"})
    subject, body = _render(alert.subject, event), _render(alert.body, event)
    assert "1234 wrong sign-in codes" in subject
    assert "above the alert threshold of 300" in body and "2026-12-08T01:02:00" in body
    assert "{{" not in subject + body


# ---------------------------------------------------------------------- 4. bounded work
def test_a_body_over_16_kib_answers_413_declared_or_chunked(wave, portal, people):
    nik = people.stranger()
    big = json.dumps({"nik": nik, "pad": "x" * 17_000}).encode()
    r = requests.post(
        portal.base_url + "/api/login", data=big, headers={"Content-Type": JSON}, timeout=T
    )
    assert r.status_code == 413

    def chunks(body: bytes, size: int = 1024):
        for start in range(0, len(body), size):
            yield body[start : start + size]

    r = requests.post(
        portal.base_url + "/api/login", data=chunks(big), headers={"Content-Type": JSON}, timeout=T
    )
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413
    form = requests.post(
        portal.base_url + "/signin",
        data={"nik": nik, "pad": "y" * 17_000},
        headers={"Origin": portal.base_url},
        timeout=T,
    )
    assert form.status_code == 413
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    with database(wave.database_url) as conn:
        counted = conn.execute(
            text("SELECT count(*) FROM login_guard WHERE key = :k"), {"k": nik_key(nik)}
        ).scalar_one()
    assert counted == 0, "a refused body was read and counted"

    # Up to 16 KiB, declared or chunked, is read as before.
    small = json.dumps({"nik": nik, "pad": "x" * 15_000}).encode()
    r = requests.post(
        portal.base_url + "/api/login", data=small, headers={"Content-Type": JSON}, timeout=T
    )
    assert r.status_code == 202
    r = requests.post(
        portal.base_url + "/api/login",
        data=chunks(small),
        headers={"Content-Type": JSON},
        timeout=T,
    )
    assert r.status_code == 202


class BlockedGateway:
    """The notifier at the edge: records what it is handed, and answers only when let."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.received: list[dict] = []
        self.calls = 0

    def send(self, messages: list[dict]) -> dict:
        self.calls += 1
        self.open.wait(30)
        self.received += messages
        return {m["idempotency_key"]: SimpleNamespace(status="ACCEPTED") for m in messages}


def _until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_code_queue_drops_and_counts_codes_instead_of_growing(caplog):
    from portal.sender import CodeSender

    gateway = BlockedGateway()
    sender = CodeSender(
        gateway,  # type: ignore[arg-type]
        window_s=0.001,
        max_batch=1,
        senders=1,
        max_queued=3,
    )
    caplog.set_level(logging.WARNING, logger="prakerja.portal")
    try:
        phones = [f"+6281200000{i:03d}" for i in range(20)]
        for i, phone in enumerate(phones):
            sender.submit(phone, f"{i:06d}")
        # One code at the gateway, one batch waiting for a sender, three in the queue.
        assert sender.dropped_full >= 20 - 5
        gateway.open.set()
        _until(lambda: len(gateway.received) == 20 - sender.dropped_full)
    finally:
        gateway.open.set()
        sender.close()
    assert len(gateway.received) + sender.dropped_full == 20
    assert sender.dropped_late == 0
    full = sum(
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) dropped \(queue full\)", r.getMessage()))
    )
    assert full == sender.dropped_full  # counted in the log, a line every 10 s at most
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert not [p for p in phones if p in logged]


def test_a_code_not_handed_to_the_gateway_within_60_s_is_dropped(caplog):
    from portal.sender import CodeSender

    gateway = BlockedGateway()
    clock = SimpleNamespace(now=1000.0)
    sender = CodeSender(
        gateway,  # type: ignore[arg-type]
        window_s=0.001,
        max_batch=1,
        senders=1,
        clock=lambda: clock.now,
    )
    caplog.set_level(logging.WARNING, logger="prakerja.portal")
    try:
        sender.submit("+62812000001", "111111")
        _until(lambda: gateway.calls == 1)  # at the gateway, which does not answer
        sender.submit("+62812000002", "222222")  # batched, waiting for the sender
        sender.submit("+62812000003", "333333")  # still in the queue
        time.sleep(0.05)
        clock.now += 61
        gateway.open.set()
        _until(lambda: sender.dropped_late == 2)
    finally:
        gateway.open.set()
        sender.close()
    assert [m["params"]["code"] for m in gateway.received] == ["111111"]
    assert sender.dropped_full == 0
    late = sum(
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) dropped \(not sent within 60 s\)", r.getMessage()))
    )
    assert late == 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "+62812" not in logged and "222222" not in logged


# ---------------------------------------------------------------------- 5. sweeps
def _plan(conn, statement: str, params: dict) -> str:
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text("EXPLAIN QUERY PLAN " + statement), params).all()
        return "\n".join(str(r[-1]) for r in rows)
    rows = conn.execute(text("EXPLAIN " + statement), params).all()
    return "\n".join(str(r[0]) for r in rows)


def test_each_sweep_statement_finds_its_rows_through_its_index(database_url):
    """No sweep reads a whole table: the plan of each statement (as the store runs it)
    searches its table through the index over the time it compares."""
    from models.db import init_db

    engine = make_portal_engine(database_url)
    init_db(engine)
    now = 1_800_000_000.0
    with engine.begin() as conn:
        # Mostly live rows, as on a busy morning; statistics as the database keeps them.
        conn.execute(
            text(
                "INSERT INTO portal_session (token_hash, nik, created_at, last_seen) "
                "VALUES (:t, :n, :c, :s)"
            ),
            [
                {"t": f"t{i}", "n": f"{i:016d}", "c": now - (i % 50) * 600, "s": now - i % 90}
                for i in range(5000)
            ],
        )
        conn.execute(
            text(
                "INSERT INTO login_guard (key, requests, failures, locked_until, code_expires, "
                "updated_at) VALUES (:k, '', '', 0, 0, :u)"
            ),
            [{"k": f"k{i}", "u": now - i % 3600} for i in range(5000)],
        )
        conn.execute(
            text("INSERT INTO portal_guess_minute (minute, failures) VALUES (:m, 1)"),
            [{"m": int(now // 60) - i} for i in range(120)],
        )
        conn.exec_driver_sql("ANALYZE")
    params = store_module.sweep_params(now)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # On cost alone PostgreSQL reads the hour of per-minute rows (60) straight
                # through; what is asked is that every statement can go through its index,
                # and a sequential scan stays one in the plan when none can.
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            for statement, index in store_module.SWEEPS:
                plan = _plan(conn, statement, params)
                table = statement.split()[2]
                if conn.dialect.name == "sqlite":
                    lines = [line for line in plan.splitlines() if table in line]
                    assert lines and all(line.startswith("SEARCH") for line in lines), plan
                    assert index in plan, plan
                else:
                    assert "Seq Scan" not in plan, plan
                    wanted = f"{table}_pkey" if index == "PRIMARY KEY" else index
                    assert wanted in plan, plan
    finally:
        engine.dispose()


def test_the_sweep_drops_what_expired_and_keeps_what_lives(clocked_store):
    store, clock = clocked_store
    now = clock.now
    with store.engine.begin() as conn:
        sessions = {
            "idle": (now - 3600, now - 30 * 60 - 1),
            "live": (now - 11 * 3600, now - 29 * 60),
            # Ended by age, but used a moment ago: its next request deletes it, or the
            # sweep once it is idle (below); no index over created_at is paid for it.
            "old": (now - 12 * 3600 - 1, now - 10),
        }
        for name, (created, seen) in sessions.items():
            conn.execute(
                text(
                    "INSERT INTO portal_session (token_hash, nik, created_at, last_seen) "
                    "VALUES (:t, 'x', :c, :s)"
                ),
                {"t": name, "c": created, "s": seen},
            )
        # More than a batch of idle sessions: the sweep goes on until none is left.
        conn.execute(
            text(
                "INSERT INTO portal_session (token_hash, nik, created_at, last_seen) "
                "VALUES (:t, 'x', :c, :c)"
            ),
            [{"t": f"idle-{i}", "c": now - 7200 - i} for i in range(1234)],
        )
        guards = {
            "quiet-a-day": (now - DAY - 5 * 60 - 1, 0),
            "a-day-of-counts": (now - 23 * 3600, 0),  # its day's limits still count
            "locked": (now - DAY - 5 * 60 - 1, now + 60),
        }
        for key, (updated, locked) in guards.items():
            conn.execute(
                text(
                    "INSERT INTO login_guard (key, requests, failures, locked_until, "
                    "code_expires, updated_at) VALUES (:k, '', '', :l, 0, :u)"
                ),
                {"k": key, "l": locked, "u": updated},
            )
        minute = int(now // 60)
        conn.execute(
            text("INSERT INTO portal_guess_minute (minute, failures) VALUES (:m, 9)"),
            [{"m": minute}, {"m": minute - 61}],
        )
    gone = store.sweep(now)
    assert gone == 1 + 1234 + 1 + 1
    with store.engine.connect() as conn:
        left = set(conn.execute(text("SELECT token_hash FROM portal_session")).scalars())
        kept = set(conn.execute(text("SELECT key FROM login_guard")).scalars())
        minutes = set(conn.execute(text("SELECT minute FROM portal_guess_minute")).scalars())
    assert left == {"live", "old"}
    assert kept == {"a-day-of-counts", "locked"}
    assert minutes == {minute}
    # Half an hour on: "old" and "live" have been idle 30 minutes, the lock has ended.
    assert store.sweep(now + 30 * 60) == 3


# ---------------------------------------------------------------------- 6. sessions
def test_a_session_ends_12_hours_after_sign_in_whatever_the_activity(wave, portal, people):
    row = people.take()
    s = sign_in(portal, row["nik"], row["phone"])

    def signed_in_ago(seconds: float) -> None:
        with database(wave.database_url) as conn:
            n = conn.execute(
                text("UPDATE portal_session SET created_at = :c, last_seen = :s WHERE nik = :n"),
                {"c": time.time() - seconds, "s": time.time() - 5, "n": row["nik"]},
            ).rowcount
        assert n == 1

    signed_in_ago(12 * 3600 - 60)  # active a moment ago, signed in nearly 12 hours ago
    assert s.get(portal.base_url + "/api/me", timeout=T).status_code == 200
    signed_in_ago(12 * 3600 + 1)
    r = s.get(portal.base_url + "/api/me", timeout=T)
    assert (r.status_code, r.json()) == (401, {"error": "not_signed_in"})
    r = s.get(portal.base_url + "/status", allow_redirects=False, timeout=T)
    assert r.status_code == 303
    with database(wave.database_url) as conn:
        left = conn.execute(
            text("SELECT count(*) FROM portal_session WHERE nik = :n"), {"n": row["nik"]}
        ).scalar_one()
    assert left == 0


def test_a_session_kept_busy_still_ends_12_hours_after_sign_in(clocked_store):
    store, clock = clocked_store
    token = store.create_session("3171010101900009")
    signed_in = clock.now
    while clock.now < signed_in + 12 * 3600 - 600:
        clock.now += 600  # a request every 10 minutes
        assert store.session_nik(token) == "3171010101900009"
    clock.now = signed_in + 12 * 3600
    assert store.session_nik_without_write(token) == (False, None)
    assert store.session_nik(token) is None
    assert store.session_nik_without_write(token) == (True, None)  # ended: gone


# ---------------------------------------------------------------------- 7. same origin
def test_a_post_without_origin_or_fetch_site_is_taken_only_as_json(wave, portal, people):
    row = people.take()
    bare = {"Connection": "close"}

    def form(path: str, data: dict | str, **headers) -> requests.Response:
        return requests.post(portal.base_url + path, data=data, headers=headers, timeout=T)

    refused = [
        form("/signin", {"nik": row["nik"]}, **bare),
        form(
            "/api/login", json.dumps({"nik": row["nik"]}), **bare, **{"Content-Type": "text/plain"}
        ),
        form("/signin/verify", {"nik": row["nik"], "code": "123456"}, **bare),
        form("/logout", {"lang": "id"}, **bare),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    with database(wave.database_url) as conn:
        counted = conn.execute(
            text("SELECT count(*) FROM login_guard WHERE key = :k"), {"k": nik_key(row["nik"])}
        ).scalar_one()
    assert counted == 0, "a refused request was counted"

    # JSON without either header: a client that is not a browser, as before.
    r = ask_code(portal, row["nik"])
    assert "Origin" not in r.request.headers and r.status_code == 202
    # A form from the portal's own page: its browser says where it comes from.
    for headers in ({"Origin": portal.base_url}, {"Sec-Fetch-Site": "same-origin"}):
        assert form("/signin", {"nik": row["nik"]}, **headers).status_code == 202, headers
