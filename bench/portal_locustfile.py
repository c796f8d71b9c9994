"""Sign-ins on announcement morning, for bench/portal_load.py (run by it, headless).

Each Locust user signs in again and again, each time as a registrant nobody used yet in
this run (a NIK may ask for 3 codes in 15 minutes): `POST /api/login`, then it reads the
code the way the person's phone would get it, from the simulator's gateway
(`GET /_admin/messages?template=login_code&to=<phone>`), then `POST /api/login/verify`.
The whole sign-in is recorded as one more entry, `signin`, whose time runs from the
first request to the session cookie.

Settings come from the environment that bench/portal_load.py sets:
PORTAL_LOAD_PEOPLE (a file of `nik<TAB>phone` lines, each phone once),
PORTAL_LOAD_SIM (the simulator's URL), PORTAL_LOAD_POLL_S (seconds between two reads of
the gateway), PORTAL_LOAD_CODE_READER (`phone`: each user reads its own phone's messages;
`shared`: one reader per Locust process reads every new code and hands it to the user
waiting for it), PORTAL_LOAD_CODE_TIMEOUT_S, PORTAL_LOAD_RESULT (where the summary goes).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import quote

import gevent
from gevent.event import AsyncResult
from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.exception import StopUser

PEOPLE = [
    tuple(line.split("\t"))
    for line in Path(os.environ["PORTAL_LOAD_PEOPLE"]).read_text().splitlines()
    if line
]
SIM = os.environ["PORTAL_LOAD_SIM"].rstrip("/")
POLL_S = float(os.environ.get("PORTAL_LOAD_POLL_S", "0.05"))
CODE_TIMEOUT_S = float(os.environ.get("PORTAL_LOAD_CODE_TIMEOUT_S", "10"))
RESULT = os.environ.get("PORTAL_LOAD_RESULT")
# "phone": each user reads its own phone's messages; "shared": one reader for all users
# (the simulator searches its message log linearly, so per-phone reads cost it more the
# longer the run).
CODE_READER = os.environ.get("PORTAL_LOAD_CODE_READER", "phone")

_next = iter(PEOPLE)
# The highest gateway sequence number any user has seen: a lower bound for "after", so
# that the gateway hands back only messages sent since (each phone is used once anyway).
_seen_seq = [0]


_waiting: dict[str, AsyncResult] = {}


def _read_codes(environment) -> None:
    """The shared reader: every new sign-in code, handed to the user waiting for it."""
    session = FastHttpSession(base_url=SIM, request_event=environment.events.request, user=None)
    after = 0
    while True:
        gevent.sleep(POLL_S)
        r = session.get(
            f"/_admin/messages?template=login_code&after={after}&last=1000",
            name="gateway: read codes (shared)",
        )
        if r.status_code != 200:
            continue
        for message in r.json()["messages"]:
            after = max(after, message["seq"])
            waiter = _waiting.pop(message["to"], None)
            if waiter is not None:
                waiter.set(message["params"]["code"])


@events.test_start.add_listener
def _start_reader(environment, **_kw) -> None:
    if CODE_READER == "shared":
        gevent.spawn(_read_codes, environment)


class SigningIn(FastHttpUser):
    def wait_time(self):  # closed loop: the next sign-in as soon as one ends
        return 0

    def _fail(self, started: float, what: str) -> None:
        events.request.fire(
            request_type="FLOW",
            name="signin",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=RuntimeError(what),
            context={},
        )

    @task
    def sign_in(self) -> None:
        try:
            nik, phone = next(_next)
        except StopIteration:
            raise StopUser() from None
        after = _seen_seq[0]
        to = quote(phone, safe="")
        waiter = AsyncResult()
        if CODE_READER == "shared":
            _waiting[phone] = waiter
        started = time.perf_counter()
        with self.client.post(
            "/api/login", json={"nik": nik}, name="/api/login", catch_response=True
        ) as r:
            if r.status_code != 202:
                r.failure(f"status {r.status_code}")
                _waiting.pop(phone, None)
                return self._fail(started, "login")
        code = None
        if CODE_READER == "shared":
            try:
                code = waiter.get(timeout=CODE_TIMEOUT_S)
            except gevent.Timeout:
                _waiting.pop(phone, None)
                return self._fail(started, "no code")
        deadline = started + CODE_TIMEOUT_S
        while code is None:
            gevent.sleep(POLL_S)
            with self.client.get(
                f"{SIM}/_admin/messages?template=login_code&to={to}&after={after}&last=1",
                name="gateway: read code",
                catch_response=True,
            ) as r:
                if r.status_code != 200:
                    r.failure(f"status {r.status_code}")
                    return self._fail(started, "gateway")
                found = r.json()["messages"]
            if found:
                code = found[-1]["params"]["code"]
                _seen_seq[0] = max(_seen_seq[0], found[-1]["seq"])
            elif time.perf_counter() > deadline:
                return self._fail(started, "no code")
        with self.client.post(
            "/api/login/verify",
            json={"nik": nik, "code": code},
            name="/api/login/verify",
            catch_response=True,
        ) as r:
            if r.status_code != 200 or "prakerja_session=" not in (
                r.headers.get("set-cookie") or ""
            ):
                r.failure(f"status {r.status_code}")
                return self._fail(started, "verify")
        events.request.fire(
            request_type="FLOW",
            name="signin",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=None,
            context={},
        )


@events.quitting.add_listener
def _summary(environment, **_kw) -> None:
    """The figures bench/portal_load.py reports, over the window after spawning."""
    if not RESULT:
        return
    stats = environment.stats
    out = {}
    for (name, method), entry in stats.entries.items():
        out[name] = {
            "method": method,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "per_s": round(entry.total_rps, 1),
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": round(entry.max_response_time or 0, 1),
            "window_s": round(
                (entry.last_request_timestamp or entry.start_time) - entry.start_time, 2
            ),
        }
    out["_errors"] = {
        f"{e.method} {e.name}: {e.error}": e.occurrences for e in stats.errors.values()
    }
    out["_people_used"] = len(PEOPLE) - sum(1 for _ in _next)
    # Exceptions in a user's task (a bug here, not an answer of the portal's): counted.
    runner = environment.runner
    out["_exceptions"] = {
        e["msg"]: e["count"] for e in (runner.exceptions.values() if runner else [])
    }
    Path(RESULT).write_text(json.dumps(out))
