"""The dashboard behind a proxy and under attack (portal.md, "Behind a proxy, and under
attack"; issue 21): https through a trusted proxy (HSTS and a Secure cookie), bounded
bodies and codes, and POSTs without Origin taken only as JSON.

What is about HTTP runs against `prakerja portal` as its own process over a small
announced wave (conftest.small_portal_wave), on SQLite and PostgreSQL; the code sender
with a gateway that stops answering.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.portal.conftest import (
    PortalProcess,
    nik_key,
    start_portal,
    stop_portal,
)

T = 10  # seconds, for every HTTP call
COOKIE = "prakerja_session"
JSON = "application/json"
HTTPS = {"X-Forwarded-Proto": "https"}
PROXY = ("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")


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


def cookie_attributes(r: requests.Response) -> set[str]:
    """The attribute names of the response's Set-Cookie, lower-cased."""
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "="), cookie
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


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
