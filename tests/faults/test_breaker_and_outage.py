"""A partner that stays down: the circuit breaker stops calling it, its registrants wait,
the draw waits for them, and a rerun once it is back finishes without asking again."""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import pytest
from sqlalchemy import select

from models.tables import Registrant
from tests.faults.conftest import (
    answered,
    assert_nothing_asked_twice,
    assert_only_delayed,
    exported,
    fast_partners,
    finish_cleanly,
    report,
    run_wave,
)

AGENCY_ORDER = ("civil-service", "military-police", "education", "village")
THRESHOLD = 5  # breaker_threshold, the default
ATTEMPTS = 4  # FAST_RETRY


def _waiting_at(sessions, state: str) -> Counter:
    with sessions() as session:
        return Counter(
            session.execute(
                select(Registrant.pending_error).where(
                    Registrant.wave_id == 1, Registrant.state == state
                )
            ).scalars()
        )


def test_the_breaker_stops_calling_a_failing_agency_and_the_stage_waits_at_once(
    prefect_server, sessions, simulator, wave_files, tmp_path
):
    """`village` (the 4th agency) answers 503 to everything. With 20 records a call, the
    client gives up after THRESHOLD failed calls (each retried ATTEMPTS times) and asks it
    nothing more; the other agencies are called as usual (the breaker is per partner)."""
    simulator.set_faults({"partners": {"village": {"down": True}}})
    config = fast_partners(
        simulator.base_url, per_kind={"agency": {"batch_size": 20, "breaker_cooldown_s": 60}}
    )
    started = time.monotonic()
    code = run_wave(wave_files.export, config)
    elapsed = time.monotonic() - started
    assert code == 3

    calls = simulator.calls()
    village = [c for c in calls if c.partner == "village"]
    assert simulator.stats()["calls"]["village"] == len(village) == THRESHOLD * ATTEMPTS
    assert all(c.status == 503 for c in village)
    waiting = _waiting_at(sessions, "AWAIT_SCREENING")
    # Those the failed calls carried (at most 20 a call: screening asks each agency about
    # a chunk of people at a time, less those an earlier agency excluded).
    carried = [json.loads(c.request)["records"] for c in village]
    assert all(0 < len(records) <= 20 for records in carried)
    answered_by_village = len({r["ref"] for records in carried for r in records})
    assert waiting["HTTPStatus503: HTTP 503 after 4 attempts"] == answered_by_village
    stopped = waiting["CircuitOpen: circuit open"]
    assert stopped > 0, "more records were left than the calls before the breaker opened"
    assert sum(waiting.values()) == answered_by_village + stopped
    # The stage did not wait for the calls it no longer made: the failed calls took well
    # under a second each (tiny backoffs), and the whole run took a few seconds of overhead.
    assert village[-1].started - village[0].started < 5
    assert elapsed < 60

    # The agencies before village answered every batch of theirs: their breakers are closed.
    for agency in AGENCY_ORDER[:3]:
        theirs = [c for c in calls if c.partner == agency]
        assert theirs and all(c.status == 200 for c in theirs)
    # Later agencies are not asked about people still waiting on village.
    assert not [c for c in calls if c.partner in ("legislature", "soe", "social-aid")]

    rep = report(sessions)
    assert not rep["draw"]["drawn"]
    assert rep["pending_by_partner"] == {"PENDING_SCREENING:village": sum(waiting.values())}
    assert_only_delayed(exported(sessions, tmp_path), wave_files.expected)

    before = answered(sessions)
    finish = finish_cleanly(simulator, sessions, wave_files, tmp_path, config)
    assert_nothing_asked_twice(before, finish.calls)


def test_the_breaker_opens_then_closes_after_its_cool_down_when_the_partner_answers(simulator):
    """The client alone, over HTTP: open after THRESHOLD failed calls, no call at all while
    open, one trial call after the cool-down (a failure re-opens it), closed again once the
    partner answers."""
    from partners.agency import AgencyClient
    from partners.client import PartnerFailure

    # Long beside the calls themselves: under a loaded CI machine a half-second cool-down
    # ran out between the breaker opening and the check that it is open.
    cooldown = 3.0
    config = fast_partners(simulator.base_url, batch_size=10, breaker_cooldown_s=cooldown)
    settings = next(a for a in config.agencies if a.id == "village")
    client = AgencyClient(settings)
    records = [{"ref": f"r{i}", "nik": f"31710101019{i:05d}"} for i in range(1, 81)]
    calls = lambda: simulator.stats()["calls"].get("village", 0)  # noqa: E731

    simulator.set_faults({"partners": {"village": {"down": True}}})
    try:
        answers = client.check(records)
        assert calls() == THRESHOLD * ATTEMPTS
        assert client.breaker.state == "open"
        assert Counter(a.error_class for a in answers.values()) == {
            "HTTPStatus503": THRESHOLD * 10,
            "CircuitOpen": len(records) - THRESHOLD * 10,
        }

        # Open: the partner is not called at all, every item waits at once.
        answers = client.check(records[:5])
        assert calls() == THRESHOLD * ATTEMPTS
        assert all(a.error_class == "CircuitOpen" for a in answers.values())

        # After the cool-down, one trial call (with its retries); still down: open again.
        time.sleep(cooldown)
        answers = client.check(records[:30])
        assert calls() == (THRESHOLD + 1) * ATTEMPTS
        assert client.breaker.state == "open"
        assert Counter(a.error_class for a in answers.values()) == {
            "HTTPStatus503": 10,
            "CircuitOpen": 20,
        }

        # The partner is back; after the cool-down the trial call succeeds and closes it.
        simulator.set_faults({})
        time.sleep(cooldown)
        answers = client.check(records)
        assert client.breaker.state == "closed"
        assert not [a for a in answers.values() if isinstance(a, PartnerFailure)]
        assert calls() == (THRESHOLD + 1) * ATTEMPTS + math.ceil(len(records) / 10)
    finally:
        client.close()


def test_an_agency_down_for_a_whole_run_holds_the_draw_and_its_rerun_asks_only_for_it(
    prefect_server, sessions, simulator, wave_files, tmp_path
):
    simulator.set_faults({"partners": {"education": {"down": True}}})
    config = fast_partners(simulator.base_url)
    code = run_wave(wave_files.export, config)
    assert code == 3

    rep = report(sessions)
    got = exported(sessions, tmp_path)
    outcomes = assert_only_delayed(got, wave_files.expected)
    waiting = rep["pending"]["PENDING_SCREENING"]
    assert waiting > 0
    assert rep["pending"] == {"PENDING_SCREENING": waiting}
    assert rep["pending_by_partner"] == {"PENDING_SCREENING:education": waiting}
    assert outcomes["PENDING"] == waiting
    # No draw while anyone may still become eligible: nobody selected, waitlisted or paid.
    assert rep["draw"]["drawn"] is False
    assert rep["funnel"]["selected"] == 0
    assert not {"SELECTED", "CONFIRMED", "CREDITED", "WAITLISTED", "ELIGIBLE"} & set(outcomes)
    assert simulator.stats()["calls"].get("card-issuer", 0) == 0
    # Those excluded by the agencies before it are final already, as the oracle says.
    for reason in ("EXCLUDED_CIVIL_SERVANT", "EXCLUDED_MILITARY_POLICE"):
        assert rep["reasons"][reason] == Counter(wave_files.expected.values())[("REJECTED", reason)]

    before_items = simulator.stats()["items"]
    before = answered(sessions)
    finish = finish_cleanly(simulator, sessions, wave_files, tmp_path, config)
    sent = assert_nothing_asked_twice(before, finish.calls)
    items = {
        partner: n - before_items.get(partner, 0)
        for partner, n in simulator.stats()["items"].items()
    }
    # Work already done is not asked for again: not the registry, nor the agencies that
    # had answered for everyone; education is asked about exactly those who waited.
    assert sent["registry"] == 0 and items.get("registry", 0) == 0
    assert items.get("civil-service", 0) == items.get("military-police", 0) == 0
    assert items["education"] == waiting
    assert finish.report["draw"]["drawn"] is True


@pytest.fixture
def database_url(tmp_path, monkeypatch) -> str:
    """SQLite only: partner-fault handling does not depend on the database engine, and
    these waves are the slowest tests (the engines are compared in tests/tasks, e2e, cli)."""
    url = f"sqlite:///{tmp_path}/prakerja.db"
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", url)
    return url
