"""The dashboard's API over real HTTP against `prakerja portal` as its own process
(portal.md): the embargo, every outcome as `wave export` gives it, sign-in that tells
nothing about who registered, the limits across workers and processes, codes and
sessions that expire, escaping, security headers, no personal data in the log, and
`wave announce`.

The module fixture (conftest.py) runs two real waves once per database; each test signs
in with NIKs of its own (the per-NIK limits are shared by the whole module).
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import create_engine, text

from portal import words
from tests.cli_process import run_cli
from tests.portal.conftest import (
    MESSAGE,
    PortalProcess,
    export_rows,
    nik_key,
    sign_in,
    start_portal,
    stop_portal,
)

COOKIE = "prakerja_session"
JSON = "application/json"
T = 10  # seconds, for every HTTP call
TOO_MANY = {"error": "too_many_requests"}
INVALID_CODE = {"error": "invalid_code"}
NOT_SIGNED_IN = {"error": "not_signed_in"}
# Intake keeps only the line, registration id and raw text of these rows
# (registrant-file.md): no phone, so there is nowhere to send a code.
# Rows nobody can sign in with: a broken row keeps no phone, an invalid NIK is nobody's.
NO_PHONE_KEPT = {"MALFORMED_ROW", "INVALID_NIK"}
INTAKE_REJECTIONS = NO_PHONE_KEPT | {
    "MISSING_FIELD",
    "NIK_DATA_MISMATCH",
    "DUPLICATE_NIK",
    "EMAIL_UNVERIFIED",
}


def can_sign_in(p) -> bool:
    """A valid NIK whose row that counts kept a phone (rows rejected by checks 2-4 keep
    the phone as given): a code reaches them."""
    from tasks.portal_index import valid_nik

    return p.wave1[1] not in NO_PHONE_KEPT and valid_nik(p.nik) and bool(p.phone.strip())


# ---------------------------------------------------------------------- people
@dataclass(frozen=True)
class Person:
    nik: str
    phone: str
    name: str
    line: int  # the row that counts (portal.md), the same line in both waves
    wave1: tuple[str, str]  # (outcome, reason) as `wave export` gives them
    wave2: tuple[str, str]


class People:
    """Who is in the export, and which NIKs the module's tests have taken already."""

    def __init__(self, portal_wave) -> None:
        rows = export_rows(portal_wave.export)
        out1, out2 = portal_wave.outcomes[1], portal_wave.outcomes[2]
        lines_of: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            line = i + 2  # line 1 is the header
            assert out1[line][2] == row["nik"] and out2[line][2] == row["nik"]
            lines_of.setdefault(row["nik"], []).append(line)
        self.rows = {i + 2: row for i, row in enumerate(rows)}
        self.export_niks = set(lines_of)
        niks_of_phone: dict[str, set[str]] = {}
        for row in rows:
            niks_of_phone.setdefault(row["phone"], set()).add(row["nik"])
        self.people: list[Person] = []
        for nik, lines in lines_of.items():
            # The row that counts: the earliest not rejected at intake, else the first.
            line = next((n for n in lines if out1[n][1] not in INTAKE_REJECTIONS), lines[0])
            row = self.rows[line]
            if len(niks_of_phone[row["phone"]]) != 1:  # a code must be told apart
                continue
            self.people.append(
                Person(nik, row["phone"], row["full_name"], line, out1[line][:2], out2[line][:2])
            )
        self.lines_of = lines_of
        self.taken: set[str] = set()
        self.strangers: list[str] = []

    def take(self, wanted=lambda p: True, *, several_rows: bool = False) -> Person:
        """A person nobody in this module has used yet (so no limit is spent)."""
        for p in self.people:
            if p.nik in self.taken or (len(self.lines_of[p.nik]) > 1) != several_rows:
                continue
            if wanted(p):
                self.taken.add(p.nik)
                return p
        pytest.fail("the export holds nobody left of the kind this test needs")

    def signable(self, wanted=lambda p: True) -> Person:
        """Someone whose phone intake kept: a code reaches them."""
        return self.take(lambda p: can_sign_in(p) and wanted(p))

    def stranger(self) -> str:
        """A well-formed, plausible NIK nobody registered (Bandung, born 15-05-1990)."""
        while True:
            nik = f"320101150590{9000 + len(self.strangers):04d}"
            self.strangers.append(nik)
            if nik not in self.export_niks:
                return nik


@pytest.fixture(scope="module")
def people(portal_wave) -> People:
    return People(portal_wave)


# ---------------------------------------------------------------------- helpers
def url(portal: PortalProcess, path: str) -> str:
    return portal.base_url + path


def fresh_post(portal: PortalProcess, path: str, body, **headers) -> requests.Response:
    """A POST on a connection of its own: with two workers, requests land on both."""
    return requests.post(
        url(portal, path), json=body, headers={"Connection": "close", **headers}, timeout=T
    )


def ask_code(portal: PortalProcess, nik: str, **headers) -> requests.Response:
    return fresh_post(portal, "/api/login", {"nik": nik}, **headers)


def verify(portal: PortalProcess, nik: str, code: str, **headers) -> requests.Response:
    return fresh_post(portal, "/api/login/verify", {"nik": nik, "code": code}, **headers)


def new_code(portal: PortalProcess, person: Person) -> str:
    """Asks a code for the person and returns what the gateway received."""
    after = portal.latest_code_seq()
    r = ask_code(portal, person.nik)
    assert r.status_code == 202, r.text
    code = portal.code_sent_to(person.phone, after)
    assert code is not None, "the gateway received no code"
    return code


def other_code(*codes: str) -> str:
    """A well-formed code that is none of `codes`."""
    n = int(codes[0]) if codes else 0
    while f"{n:06d}" in codes:
        n = (n + 1) % 1_000_000
    return f"{n:06d}"


def wrong_codes(right: str, n: int) -> list[str]:
    return [f"{(int(right) + k) % 1_000_000:06d}" for k in range(1, n + 1)]


def me(portal: PortalProcess, session: requests.Session) -> dict:
    r = session.get(url(portal, "/api/me"), timeout=T)
    assert r.status_code == 200, r.text
    return r.json()


def headers_of(r: requests.Response) -> list[tuple[str, str]]:
    """Every header as sent (names lower-cased), but the date."""
    return sorted((k.lower(), v) for k, v in r.raw.headers.items() if k.lower() != "date")


def retry_after(r: requests.Response) -> int:
    value = int(r.headers["Retry-After"])
    assert 0 < value <= 15 * 60 + 1
    return value


@contextmanager
def database(portal_wave):
    sqlite = portal_wave.database_url.startswith("sqlite")
    engine = create_engine(portal_wave.database_url, connect_args={"timeout": 30} if sqlite else {})
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def section(html: str, wave: int) -> str:
    found = re.search(
        rf'<section[^>]*aria-labelledby="wave-{wave}"[^>]*>(.*?)</section>', html, re.S
    )
    assert found, f"no section for wave {wave}"
    return found.group(1)


def visible_text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def personal_data(people: People) -> list[str]:
    """Every NIK, phone, email and KK of the export, the strangers' NIKs, and the names
    of the people the tests signed in as."""
    found = list(people.strangers)
    for row in people.rows.values():
        found += [
            row[k] for k in ("nik", "phone", "email", "kk_number") if row[k] and len(row[k]) >= 8
        ]
    found += [p.name for p in people.people if p.nik in people.taken and len(p.name) >= 8]
    return found


def assert_no_personal_data(log: str, people: People) -> None:
    assert "dashboard on http://" in log, "not the portal's log"
    leaked = [s for s in personal_data(people) if s in log]
    assert not leaked, f"{len(leaked)} personal values in the portal's log"


# ---------------------------------------------------------------------- 1. embargo
def test_an_unannounced_wave_shows_nothing_but_that_it_is_being_verified(
    portal_wave, portal, people
):
    # Credited in wave 2, not selected in wave 1; and credited in wave 1, then a prior
    # recipient in wave 2: what the database knows of wave 2 must not show.
    late = people.signable(lambda p: p.wave1[0] == "NOT_SELECTED" and p.wave2[0] == "CREDITED")
    prior = people.signable(
        lambda p: p.wave1[0] == "CREDITED" and p.wave2 == ("REJECTED", "PRIOR_RECIPIENT")
    )
    codes = set(words.OUTCOME) | {str(c) for c in _all_codes()}
    for person in (late, prior):
        s = sign_in(portal, person.nik, person.phone)
        body = me(portal, s)
        assert [w["wave"] for w in body["waves"]] == [1, 2]
        assert body["waves"][0]["announced"] is True
        assert body["waves"][0]["outcome"] == person.wave1[0]
        assert body["waves"][1] == {"wave": 2, "announced": False}
        for lang in ("id", "en"):
            r = s.get(url(portal, f"/status?lang={lang}"), timeout=T)
            assert r.status_code == 200
            wave2 = section(r.text, 2)
            assert words.text("not_announced", lang) in wave2
            for code in person.wave2:
                if code:
                    assert code not in wave2
            assert not (codes & set(re.findall(r"[A-Z_]{4,}", visible_text(wave2))))
            headline, what, next_step = words.explain(*person.wave2, lang)
            for sentence in (headline, what, next_step):
                assert sentence not in wave2
            if person is late:  # nothing of the wave-2 credit anywhere on the page
                assert "CREDITED" not in r.text and "Rp" not in r.text
                assert words.OUTCOME["CREDITED"][lang] not in r.text
            else:
                assert "PRIOR_RECIPIENT" not in r.text


def _all_codes():
    from models.enums import Outcome, PendingReason, ReasonCode

    return [*Outcome, *ReasonCode, *PendingReason]


# ---------------------------------------------------------------------- 2. outcomes
def test_every_outcome_and_reason_reads_as_the_export_gives_it(portal_wave, portal, people):
    # A NIK that is not valid is nobody's to sign in with: 202 like any, and no code.
    invalid = people.take(lambda p: p.wave1 == ("REJECTED", "INVALID_NIK"))
    after_invalid = portal.latest_code_seq()
    r = ask_code(portal, invalid.nik)
    assert (r.status_code, r.json()) == (202, {"status": "code_sent"})

    # Every (outcome, reason) of the export, each for someone it is the row that counts
    # of. Not reachable: DUPLICATE_NIK never counts (the NIK's earlier row was accepted),
    # and a broken row or an invalid NIK cannot receive a code.
    single = [p for p in people.people if len(people.lines_of[p.nik]) == 1 and can_sign_in(p)]
    wanted = {p.wave1 for p in single}
    assert len(wanted) >= 20 and ("CREDITED", "") in wanted
    # Rejected at intake with a valid NIK: they too see why (intake kept their phone).
    assert {"MISSING_FIELD", "NIK_DATA_MISMATCH", "EMAIL_UNVERIFIED"} <= {r for _, r in wanted}
    chosen = [people.take(lambda p, pair=pair: p.wave1 == pair) for pair in sorted(wanted)]
    # ...and a NIK with a DUPLICATE_NIK row: the row that counts is its accepted row.
    chosen.append(people.take(can_sign_in, several_rows=True))
    assert any(
        portal_wave.outcomes[1][n][1] == "DUPLICATE_NIK" for n in people.lines_of[chosen[-1].nik]
    )

    with database(portal_wave) as conn:
        credited = {
            r.line: r
            for r in conn.execute(
                text(
                    "SELECT r.line, r.card_number, r.credited_at, l.amount FROM registrant r "
                    "JOIN ledger l ON l.wave_id = r.wave_id AND l.nik = r.nik "
                    "AND l.benefit = 'training' WHERE r.wave_id = 1 AND r.state = 'CREDITED'"
                )
            )
        }
    for person in chosen:
        s = sign_in(portal, person.nik, person.phone)
        body = me(portal, s)
        assert body["nik_masked"] == person.nik[:4] + "*" * 10 + person.nik[-2:]
        first, second = body["waves"]
        assert second == {"wave": 2, "announced": False}
        assert (first["wave"], first["announced"]) == (1, True)
        assert (first["outcome"], first["reason"]) == person.wave1, person.wave1
        assert first["message"] == MESSAGE
        money = {"card_number_masked", "balance", "credited_at"}
        if person.wave1[0] != "CREDITED":
            assert not (money & set(first)), person.wave1
            continue
        row = credited[person.line]
        assert re.fullmatch(r"\*{4} \*{4} \*{4} \d{4}", first["card_number_masked"])
        assert first["card_number_masked"][-4:] == row.card_number[-4:]
        assert type(first["balance"]) is int and first["balance"] == 1_000_000 == row.amount
        at = datetime.fromisoformat(first["credited_at"])
        assert first["credited_at"].endswith("+07:00")
        stored = row.credited_at
        stored = stored if isinstance(stored, datetime) else datetime.fromisoformat(stored)
        assert abs(at - stored.replace(tzinfo=UTC)) < timedelta(seconds=1)

    # By now (several seconds of sign-ins later) a code for the invalid NIK would be out.
    assert portal.code_sent_to(invalid.phone, after_invalid, timeout=0.5) is None


# ---------------------------------------------------------------------- 3. parity
def test_sign_in_answers_the_same_for_a_registered_and_an_unregistered_nik(portal, people):
    known = people.signable()
    stranger = people.stranger()
    after = portal.latest_code_seq()
    for _ in range(3):  # interleaved, so that both windows start together
        a, b = ask_code(portal, known.nik), ask_code(portal, stranger)
        assert (a.status_code, a.json()) == (202, {"status": "code_sent"})
        assert (a.status_code, a.content, headers_of(a)) == (
            b.status_code,
            b.content,
            headers_of(b),
        )
    a, b = ask_code(portal, known.nik), ask_code(portal, stranger)
    assert (a.status_code, a.json()) == (429, TOO_MANY)
    assert (b.status_code, b.json()) == (429, TOO_MANY)
    # Retry-After counts whole seconds from each NIK's first request: the two may fall
    # either side of a second's boundary.
    assert abs(retry_after(a) - retry_after(b)) <= 1
    assert [h for h in headers_of(a) if h[0] != "retry-after"] == [
        h for h in headers_of(b) if h[0] != "retry-after"
    ]
    assert a.content == b.content

    # Three codes went to the registered NIK's phone, none for the fourth request.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sent = [m for m in portal.codes_sent_after(after) if m["to"] == known.phone]
        if len(sent) >= 3:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    sent = [m["params"]["code"] for m in portal.codes_sent_after(after) if m["to"] == known.phone]
    assert len(sent) == 3

    wrong = other_code(*sent)
    a, b = verify(portal, known.nik, wrong), verify(portal, stranger, wrong)
    assert (a.status_code, a.json()) == (401, INVALID_CODE)
    assert (a.status_code, a.content, headers_of(a)) == (b.status_code, b.content, headers_of(b))


def test_a_body_without_a_16_digit_nik_answers_422(portal, people):
    stranger = people.stranger()
    for body in (
        {},
        {"nik": stranger[:-1]},
        {"nik": stranger + "0"},
        {"nik": int(stranger)},
        {"nik": stranger[:-1] + "x"},
        {"nik": "３" * 16},  # digits, but not ASCII ones
        {"NIK": stranger},
        [stranger],
        "not json",
    ):
        r = fresh_post(portal, "/api/login", body)
        assert r.status_code == 422, body
        assert r.headers["Cache-Control"] == "no-store"
    r = requests.post(
        url(portal, "/api/login"), data=b"{nik", headers={"Content-Type": JSON}, timeout=T
    )
    assert r.status_code == 422
    # None of them was counted: the NIK still has its three code requests.
    for _ in range(3):
        assert ask_code(portal, stranger).status_code == 202
    assert ask_code(portal, stranger).status_code == 429


# ---------------------------------------------------------------------- 4. lockout
def test_five_wrong_codes_lock_the_nik_even_for_the_right_code(portal, people):
    """Fresh connections for every request: the two workers share the counts."""
    known = people.signable()
    right = new_code(portal, known)
    for code in wrong_codes(right, 5):
        r = verify(portal, known.nik, code)
        assert (r.status_code, r.json()) == (401, INVALID_CODE)
    locked = verify(portal, known.nik, right)
    assert (locked.status_code, locked.json()) == (429, TOO_MANY)
    retry_after(locked)
    assert COOKIE not in locked.cookies
    # A new code does not open the lock either.
    fresh = new_code(portal, known)
    r = verify(portal, known.nik, fresh)
    assert (r.status_code, r.json()) == (429, TOO_MANY)

    # The same for a NIK nobody registered, and the answers cannot be told apart.
    stranger = people.stranger()
    for code in wrong_codes(right, 5):
        r = verify(portal, stranger, code)
        assert (r.status_code, r.json()) == (401, INVALID_CODE)
    r = verify(portal, stranger, right)
    assert (r.status_code, r.json()) == (429, TOO_MANY)
    retry_after(r)
    assert [h for h in headers_of(r) if h[0] != "retry-after"] == [
        h for h in headers_of(locked) if h[0] != "retry-after"
    ]


def test_limits_hold_across_two_portal_processes(portal_wave, people):
    one = start_portal(portal_wave, workers=1)
    try:
        two = start_portal(portal_wave, workers=1)
        try:
            both = [one, two]
            # Code requests: the 4th across the two processes is refused, on either.
            asker = people.signable()
            after = one.latest_code_seq()
            for i in range(3):
                assert ask_code(both[i % 2], asker.nik).status_code == 202
            for p in both:
                r = ask_code(p, asker.nik)
                assert (r.status_code, r.json()) == (429, TOO_MANY)
            time.sleep(0.5)
            to_asker = [m for m in one.codes_sent_after(after) if m["to"] == asker.phone]
            assert len(to_asker) == 3

            # A code asked of one process signs in at the other.
            traveller = people.signable()
            code = new_code(one, traveller)
            r = verify(two, traveller.nik, code)
            assert r.status_code == 200 and COOKIE in r.cookies

            # Wrong codes: 5 spread over both lock the NIK in both.
            guessed = people.signable()
            right = new_code(one, guessed)
            for i, code in enumerate(wrong_codes(right, 5)):
                assert verify(both[i % 2], guessed.nik, code).status_code == 401
            for p in both:
                r = verify(p, guessed.nik, right)
                assert (r.status_code, r.json()) == (429, TOO_MANY)
            stranger = people.stranger()
            for i, code in enumerate(wrong_codes(right, 5)):
                assert verify(both[i % 2], stranger, code).status_code == 401
            for p in both:
                assert verify(p, stranger, right).status_code == 429
        finally:
            stop_portal(two)
            assert_no_personal_data(two.log(), people)
    finally:
        stop_portal(one)
        assert_no_personal_data(one.log(), people)


# ---------------------------------------------------------------------- 5. codes
def test_a_code_works_once_and_a_new_code_voids_the_earlier(portal, people):
    person = people.signable()
    code = new_code(portal, person)
    # Not for anyone else's NIK.
    stranger = people.stranger()
    assert verify(portal, stranger, code).status_code == 401
    r = verify(portal, person.nik, code)
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = verify(portal, person.nik, code)
    assert (r.status_code, r.json()) == (401, INVALID_CODE)

    old = new_code(portal, person)
    new = new_code(portal, person)
    if new == old:  # one chance in a million
        pytest.skip("the gateway got the same code twice")
    r = verify(portal, person.nik, old)
    assert (r.status_code, r.json()) == (401, INVALID_CODE)
    r = verify(portal, person.nik, new)
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_an_expired_code_does_not_sign_in(portal_wave, portal, people):
    person = people.signable()
    code = new_code(portal, person)
    with database(portal_wave) as conn:
        changed = conn.execute(
            text("UPDATE login_guard SET code_expires = :t WHERE key = :k"),
            {"t": time.time() - 1, "k": nik_key(person.nik)},
        ).rowcount
    assert changed == 1
    r = verify(portal, person.nik, code)
    assert (r.status_code, r.json()) == (401, INVALID_CODE)
    assert COOKIE not in r.cookies


# ---------------------------------------------------------------------- 6. sessions
def test_logout_ends_the_session(portal, people):
    person = people.signable()
    s = sign_in(portal, person.nik, person.phone)
    token = s.cookies[COOKIE]
    me(portal, s)
    # A POST with no body: a browser sends its Origin (portal.md, "Same origin").
    r = s.post(url(portal, "/api/logout"), headers={"Origin": portal.base_url}, timeout=T)
    assert r.status_code == 204
    for path in ("/api/me", "/api/me?nik=" + person.nik[:4]):
        r = requests.get(url(portal, path), cookies={COOKIE: token}, timeout=T)
        assert (r.status_code, r.json()) == (401, NOT_SIGNED_IN)
    r = requests.get(
        url(portal, "/status"), cookies={COOKIE: token}, allow_redirects=False, timeout=T
    )
    assert r.status_code == 303 and r.headers["Location"].startswith("/?")


def test_a_session_ends_after_30_idle_minutes(portal_wave, portal, people):
    person = people.signable()
    s = sign_in(portal, person.nik, person.phone)

    def idle_for(seconds: float) -> None:
        with database(portal_wave) as conn:
            n = conn.execute(
                text("UPDATE portal_session SET last_seen = :t WHERE nik = :nik"),
                {"t": time.time() - seconds, "nik": person.nik},
            ).rowcount
        assert n == 1

    idle_for(29 * 60)  # still alive, and the request counts as activity
    me(portal, s)
    idle_for(30 * 60 + 1)
    r = s.get(url(portal, "/api/me"), timeout=T)
    assert (r.status_code, r.json()) == (401, NOT_SIGNED_IN)


def test_status_without_a_session_redirects_to_sign_in(portal):
    for cookies in ({}, {COOKIE: "not-a-session"}, {COOKIE: "x" * 500}):
        r = requests.get(url(portal, "/status"), cookies=cookies, allow_redirects=False, timeout=T)
        assert r.status_code == 303
        assert r.headers["Location"].split("?")[0] == "/"
        r = requests.get(url(portal, "/api/me"), cookies=cookies, timeout=T)
        assert (r.status_code, r.json()) == (401, NOT_SIGNED_IN)


# ---------------------------------------------------------------------- 7. escaping
def test_the_status_page_escapes_the_message_and_the_name(portal_wave, portal, people):
    person = people.signable()
    s = sign_in(portal, person.nik, person.phone)
    page = s.get(url(portal, "/status"), timeout=T).text
    assert "&lt;script&gt;alert(" in page and "&amp; lainnya" in page
    assert "<script" not in page.lower()

    name = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    with database(portal_wave) as conn:
        n = conn.execute(
            text("UPDATE registrant SET full_name = :name WHERE nik = :nik"),
            {"name": name, "nik": person.nik},
        ).rowcount
    assert n == 2  # the person's row in each wave
    for lang in ("id", "en"):
        page = s.get(url(portal, f"/status?lang={lang}"), timeout=T).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script" not in page.lower() and "<img" not in page.lower()


# ---------------------------------------------------------------------- 8. headers
def _assert_security_headers(r: requests.Response, *, personal: bool = True) -> None:
    csp = r.headers.get("Content-Security-Policy")
    assert csp, r.url
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    directives = dict(
        (d.split()[0], d.split()[1:]) for d in (x.strip() for x in csp.split(";")) if d
    )
    # Scripts and styles from the server itself, or not at all.
    for sources in directives.values():
        assert set(sources) <= {"'self'", "'none'"}, csp
    assert directives.get("default-src") in (["'none'"], ["'self'"])
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert r.headers.get("X-Frame-Options") == "DENY" or directives.get("frame-ancestors") == [
        "'none'"
    ]
    if personal:
        assert r.headers.get("Cache-Control") == "no-store", r.url


def test_security_headers_and_the_session_cookie(portal, people):
    person = people.signable()
    s = requests.Session()
    _assert_security_headers(s.get(url(portal, "/"), timeout=T))
    after = portal.latest_code_seq()
    r = s.post(url(portal, "/api/login"), json={"nik": person.nik}, timeout=T)
    assert r.status_code == 202
    _assert_security_headers(r)
    code = portal.code_sent_to(person.phone, after)
    r = s.post(url(portal, "/api/login/verify"), json={"nik": person.nik, "code": code}, timeout=T)
    assert r.status_code == 200
    _assert_security_headers(r)

    cookie = r.headers["Set-Cookie"]
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    assert name_value.startswith(COOKIE + "=") and len(name_value) > len(COOKIE) + 20
    attributes = {a.split("=")[0].lower(): a.partition("=")[2] for a in attributes}
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "strict"
    assert attributes.get("path") == "/"
    assert "secure" not in attributes  # served on loopback, over plain HTTP

    for path in ("/status", "/api/me"):
        r = s.get(url(portal, path), timeout=T)
        assert r.status_code == 200
        _assert_security_headers(r)
    for r in (
        requests.get(url(portal, "/api/me"), timeout=T),  # 401
        fresh_post(portal, "/api/login", {"nik": "1"}),  # 422
    ):
        _assert_security_headers(r)


def test_a_post_from_another_origin_is_refused_and_sends_no_code(portal_wave, portal, people):
    person = people.signable()
    evil = "https://evil.example"
    after = portal.latest_code_seq()
    for headers in ({"Origin": evil}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        r = ask_code(portal, person.nik, **headers)
        assert r.status_code == 403, headers
        r = requests.post(
            url(portal, "/signin"), data={"nik": person.nik}, headers=headers, timeout=T
        )
        assert r.status_code == 403, headers
    with database(portal_wave) as conn:
        guard = conn.execute(
            text("SELECT count(*) FROM login_guard WHERE key = :k"), {"k": nik_key(person.nik)}
        ).scalar_one()
    assert guard == 0, "a refused request was counted or made a code"
    assert portal.code_sent_to(person.phone, after, timeout=0.5) is None

    own = portal.base_url
    r = ask_code(portal, person.nik, Origin=own)
    assert (r.status_code, r.json()) == (202, {"status": "code_sent"})
    code = portal.code_sent_to(person.phone, after)
    assert code is not None
    r = verify(portal, person.nik, code, Origin=evil)
    assert r.status_code == 403 and COOKIE not in r.cookies
    r = verify(portal, person.nik, code, Origin=own)
    assert r.status_code == 200 and COOKIE in r.cookies
    token = r.cookies[COOKIE]
    # A foreign page cannot sign the person out either.
    r = requests.post(
        url(portal, "/api/logout"), cookies={COOKIE: token}, headers={"Origin": evil}, timeout=T
    )
    assert r.status_code == 403
    r = requests.get(url(portal, "/api/me"), cookies={COOKIE: token}, timeout=T)
    assert r.status_code == 200


# ---------------------------------------------------------------------- 10. CLI
def _announced(portal_wave, wave: int):
    r = run_cli(["wave", "report", "--wave", str(wave), "--json"], portal_wave.env())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["announced_at"]


def test_wave_announce_refuses_unknown_and_undrawn_waves_and_long_messages(portal_wave):
    from models.tables import Wave

    r = run_cli(["wave", "announce", "--wave", "99"], portal_wave.env())
    assert r.returncode == 2 and "99" in r.stderr

    undrawn = 98
    now = datetime(2026, 11, 28)
    with portal_wave.sessions() as session:
        session.add(
            Wave(
                wave_id=undrawn,
                quota=10,
                reference_date=now.date(),
                lottery_seed="s",
                lottery_seed_sha256="0" * 64,
                rollout_deadline=now + timedelta(days=30),
                created_at=now,
            )
        )
        session.commit()
    try:
        r = run_cli(
            ["wave", "announce", "--wave", str(undrawn), "--message", "hasil"], portal_wave.env()
        )
        assert r.returncode == 2 and "draw" in r.stderr
        with database(portal_wave) as conn:
            announced = conn.execute(
                text("SELECT announced_at FROM wave WHERE wave_id = :w"), {"w": undrawn}
            ).scalar()
        assert announced is None
    finally:
        with portal_wave.sessions() as session:
            session.delete(session.get(Wave, undrawn))
            session.commit()

    before = _announced(portal_wave, 1)
    r = run_cli(["wave", "announce", "--wave", "1", "--message", "x" * 1001], portal_wave.env())
    assert r.returncode == 2
    with database(portal_wave) as conn:
        message = conn.execute(text("SELECT announce_message FROM wave WHERE wave_id = 1")).scalar()
    assert message == MESSAGE
    assert _announced(portal_wave, 1) == before


def test_announcing_again_replaces_the_message_and_keeps_the_first_time(
    portal_wave, portal, people
):
    person = people.signable()
    s = sign_in(portal, person.nik, person.phone)
    first = _announced(portal_wave, 1)
    assert first is not None and _announced(portal_wave, 2) is None
    replaced = "Hasil diperbarui: " + "y" * 982  # exactly 1,000 characters
    assert len(replaced) == 1000
    try:
        r = run_cli(["wave", "announce", "--wave", "1", "--message", replaced], portal_wave.env())
        assert r.returncode == 0, r.stderr
        assert _announced(portal_wave, 1) == first
        assert me(portal, s)["waves"][0]["message"] == replaced
    finally:
        r = run_cli(["wave", "announce", "--wave", "1", "--message", MESSAGE], portal_wave.env())
        assert r.returncode == 0, r.stderr
    assert _announced(portal_wave, 1) == first
    assert me(portal, s)["waves"][0]["message"] == MESSAGE


# ---------------------------------------------------------------------- 9. the log (last)
def test_the_portal_log_holds_no_personal_data(portal, people):
    """After every test above: no NIK, phone, email, KK or name in the log."""
    if not people.taken:
        pytest.skip("meaningful only after the rest of the module")
    assert_no_personal_data(portal.log(), people)
