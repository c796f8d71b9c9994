"""After the balance, end to end (lifecycle.md): a small wave is credited with the real
simulator over HTTP, its participants' training lives are scripted on the simulator's
platforms, and `python -m cli payout run` is run at as-of dates months apart, as an
operator would. Each test asserts the rules of lifecycle.md a participant or the
treasury would notice: who is revoked and why, which installment is paid, stopped or
failed, that nothing is paid twice at the partner, and conservation after every run.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.cli_process import run_cli
from tests.conftest import DATABASES, POSTGRES_URL

SEED = "payout-e2e-seed"
REGISTRANTS = 160
QUOTA = 12
REFERENCE = date(2026, 11, 28)
AUTH = {"Authorization": "Bearer simulator"}
WIB = "+07:00"


# One credited wave per database kind for the whole module (a wave run costs most of a
# test's time): its database and the simulator's journal (the issuer's credits, so the
# cards are known) are copied for each test, which then starts from the same morning.


def _partners_env(database_url: str, sim, work: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    from tests.crash.conftest import partners_file

    env = dict(os.environ)
    env["PRAKERJA_DATABASE_URL"] = database_url
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    # A partner that stays down ends a run in seconds, not a minute of retries.
    quick = {
        "retry_attempts": 2,
        "retry_total_s": 2,
        "retry_backoff_s": 0.05,
        "breaker_threshold": 2,
    }
    overrides = {name: quick for name in ("registry", "agencies", "payment_providers")}
    overrides["card_issuer"] = quick
    env["PRAKERJA_PARTNERS"] = str(partners_file(work / "partners.toml", sim.base_url, overrides))
    env["PRAKERJA_WORKERS"] = "1"
    env["PRAKERJA_SIMULATOR_API_KEY"] = "simulator"
    return env


def _pg_database(name: str) -> tuple[str, str]:
    """(server URL for administration, URL of database `name` beside the test database)."""
    from sqlalchemy.engine import make_url

    base = make_url(POSTGRES_URL)
    return base.render_as_string(hide_password=False), base.set(
        database=f"{base.database}_{name}"
    ).render_as_string(hide_password=False)


def _pg_admin(sql: str) -> None:
    admin = create_engine(_pg_database("")[0], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        admin.dispose()


@pytest.fixture(scope="module", params=DATABASES)
def template(request, tmp_path_factory, prefect_server):
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread

    work = tmp_path_factory.mktemp("payout-template")
    if request.param == "sqlite":
        url = f"sqlite:///{work}/prakerja.db"
    else:
        url = _pg_database("payout_tpl")[1]
        name = url.rsplit("/", 1)[1]
        _pg_admin(f"DROP DATABASE IF EXISTS {name}")
        _pg_admin(f"CREATE DATABASE {name}")
    journal = work / "simulator.jsonl"
    sim = SimulatorThread(SEED, lives="none", state_path=journal).start()
    try:
        env = _partners_env(url, sim, work)
        export = work / "wave1.csv"
        generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
        _cli(
            env,
            "wave", "run", "--wave", "1", "--registrants", str(export), "--quota", str(QUOTA),
            "--lottery-seed", "payout-lottery", "--reference-date", REFERENCE.isoformat(),
        )  # fmt: skip
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, nik, card_number, payout_provider, payout_account, credited_at "
                    "FROM registrant WHERE state = 'CREDITED' ORDER BY id"
                )
            ).mappings()
            people = [dict(r) for r in rows]
        engine.dispose()
    finally:
        sim.stop()
    assert len(people) == QUOTA
    yield {"kind": request.param, "url": url, "journal": journal, "people": people}


@pytest.fixture
def database_url(template, tmp_path, monkeypatch) -> str:
    if template["kind"] == "sqlite":
        source = Path(template["url"].removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{source}{suffix}").exists():
                shutil.copy(f"{source}{suffix}", tmp_path / f"prakerja.db{suffix}")
        url = f"sqlite:///{tmp_path}/prakerja.db"
    else:
        url = _pg_database("payout_run")[1]
        name = url.rsplit("/", 1)[1]
        _pg_admin(f"DROP DATABASE IF EXISTS {name}")
        _pg_admin(f"CREATE DATABASE {name} TEMPLATE {template['url'].rsplit('/', 1)[1]}")
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", url)
    return url


@pytest.fixture
def simulator(template, tmp_path):
    from partners.simulator.server import SimulatorThread

    journal = tmp_path / "simulator.jsonl"
    shutil.copy(template["journal"], journal)
    with SimulatorThread(SEED, lives="none", state_path=journal) as sim:
        yield sim


@pytest.fixture
def env(prefect_server, database_url, simulator, tmp_path) -> dict[str, str]:
    return _partners_env(database_url, simulator, tmp_path)


def _cli(env, *args: str, check: int | None = 0):
    result = run_cli(list(args), env=env, timeout=600)
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


@pytest.fixture
def people(template) -> list[dict]:
    """The template wave's participants (id, nik, card, provider, account, credited_at)."""
    return [dict(p) for p in template["people"]]


def _day0(people: list[dict]) -> date:
    from rules.lifecycle import wib_date

    credited_at = people[0]["credited_at"]
    if isinstance(credited_at, str):  # SQLite's text, read without the model
        credited_at = datetime.fromisoformat(credited_at)
    return wib_date(credited_at)


def _at(day: date, hour: int = 10, minute: int = 0) -> str:
    return datetime.combine(day, time(hour, minute)).isoformat() + WIB


def _script(sim, platform: str, events: list[dict]) -> None:
    r = requests.post(
        f"{sim.base_url}/_admin/training/events",
        json={"platform": platform, "events": events},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _clock(sim, day: date) -> None:
    r = requests.post(
        f"{sim.base_url}/_admin/clock", json={"now": _at(day, 12)}, headers=AUTH, timeout=10
    )
    assert r.status_code == 200, r.text


def _payout(env, sim, day: date, *extra: str, check: int | None = 0) -> dict:
    _clock(sim, day)
    result = _cli(env, "payout", "run", "--as-of", day.isoformat(), "--json", *extra, check=check)
    out = json.loads(result.stdout)
    assert out["report"]["conservation_ok"], out["report"]
    return out


def _lifecycle(database_url: str) -> dict[str, dict]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        people = {
            r["nik"]: dict(r) for r in conn.execute(text("SELECT * FROM participant")).mappings()
        }
        for nik in people:
            people[nik]["payments"] = {
                (p["benefit"], p["installment"]): dict(p)
                for p in conn.execute(
                    text("SELECT * FROM payment WHERE nik = :n"), {"n": nik}
                ).mappings()
            }
    engine.dispose()
    return people


def _paid_at_partner(sim) -> dict[str, int]:
    """(NIK, benefit, installment) -> times money moved for it at any payment partner,
    under any key (a key is applied once; a second key would be a second payment)."""
    from partners.simulator.truth import PAYMENT_PROVIDERS

    moved: dict[str, int] = {}
    for provider in PAYMENT_PROVIDERS:
        r = requests.get(
            f"{sim.base_url}/_admin/payment/{provider}/disbursements", headers=AUTH, timeout=10
        )
        assert r.status_code == 200, r.text
        for d in r.json()["disbursements"]:
            if d["status"] == "COMPLETED":
                what = d["idempotency_key"].split(":", 1)[1]  # without the wave
                moved[what] = moved.get(what, 0) + 1
    return moved


def _event(eid: str, kind: str, card: str, course: str, at: str, price: int | None = None) -> dict:
    e = {"event_id": eid, "type": kind, "card_number": card, "course_id": course, "at": at}
    if price is not None:
        e["price"] = price
    return e


def test_a_participants_life_rule_by_rule(env, simulator, people, database_url):
    d0 = _day0(people)
    deadline = d0 + timedelta(days=30)
    on_deadline, cancelled, orphan, used, shuffled, excluded, failing, late = people[:8]
    sim = simulator
    _script(
        sim,
        "marketplace-a",
        [
            # a purchase at 23:30 WIB on the deadline day counts
            _event(
                "a-1", "PURCHASED", on_deadline["card_number"], "c1", _at(deadline, 23, 30), 300_000
            ),
            _event(
                "a-2",
                "COMPLETED",
                on_deadline["card_number"],
                "c1",
                _at(deadline + timedelta(days=5)),
            ),
            # a cancelled purchase is no purchase
            _event(
                "a-3",
                "PURCHASED",
                cancelled["card_number"],
                "c2",
                _at(d0 + timedelta(days=2)),
                200_000,
            ),
            _event(
                "a-4",
                "CANCELLED",
                cancelled["card_number"],
                "c2",
                _at(d0 + timedelta(days=3)),
                200_000,
            ),
            # a completion without a purchase is no completion (nor a purchase)
            _event("a-5", "COMPLETED", orphan["card_number"], "c3", _at(d0 + timedelta(days=4))),
            # out of order: the completion arrives first; the purchase arrives twice
            _event("a-6", "COMPLETED", shuffled["card_number"], "c4", _at(d0 + timedelta(days=5))),
            _event(
                "a-7",
                "PURCHASED",
                shuffled["card_number"],
                "c4",
                _at(d0 + timedelta(days=1)),
                1_000_000,
            ),
            _event(
                "a-7",
                "PURCHASED",
                shuffled["card_number"],
                "c4",
                _at(d0 + timedelta(days=1)),
                1_000_000,
            ),
            # an event for a card the program never issued
            _event(
                "a-8", "PURCHASED", "5049000000000000", "c5", _at(d0 + timedelta(days=1)), 100_000
            ),
            # a purchase one day after the deadline does not count (made after the issuer
            # closed the card at noon, the simulator's clock of that run)
            _event(
                "a-9",
                "PURCHASED",
                late["card_number"],
                "c9",
                _at(deadline + timedelta(days=1), 13),
                100_000,
            ),
        ],
    )
    _script(
        sim,
        "marketplace-b",
        [
            _event(f"b-{i}", kind, p["card_number"], "k1", _at(d0 + timedelta(days=day)), price)
            for i, (p, kind, day, price) in enumerate(
                [
                    (excluded, "PURCHASED", 1, 500_000),
                    (excluded, "COMPLETED", 6, None),
                    (failing, "PURCHASED", 1, 500_000),
                    (failing, "COMPLETED", 6, None),
                ]
            )
        ],
    )
    r = requests.post(
        f"{sim.base_url}/_admin/issuer/card-used",
        json={"card_number": used["card_number"]},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    r = requests.post(
        f"{sim.base_url}/_admin/payment/{failing['payout_provider']}/fail",
        json={"account": failing["payout_account"], "reason": "ACCOUNT_CLOSED"},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200, r.text

    # Day 7: shuffled, excluded and failing are trained; their first installment is due.
    out = _payout(env, sim, d0 + timedelta(days=7))
    life = _lifecycle(database_url)
    assert life[shuffled["nik"]]["state"] == "TRAINED"
    assert life[on_deadline["nik"]]["state"] == "AWAITING_TRAINING"
    assert life[shuffled["nik"]]["payments"][("incentive", 1)]["status"] == "PAID"
    assert life[failing["nik"]]["payments"][("incentive", 1)]["status"] == "FAILED"
    assert life[failing["nik"]]["payments"][("incentive", 1)]["reason"] == "ACCOUNT_CLOSED"
    assert out["report"]["unmatched_events"] >= 1
    assert out["report"]["completions_without_purchase"] >= 1
    feeds = out["report"]["feeds"]
    assert sum(f["duplicates"] for f in feeds.values()) >= 1

    # A rerun of the same date pays nothing twice.
    before = _paid_at_partner(sim)
    again = _payout(env, sim, d0 + timedelta(days=7))
    assert again["run"].endswith("-rerun-1")
    assert _paid_at_partner(sim) == before

    # Day 31: whoever bought nothing by the deadline day is revoked; the deadline-day
    # buyer is in training; the card used at the issuer is not revoked.
    _payout(env, sim, deadline + timedelta(days=1))
    life = _lifecycle(database_url)
    assert life[on_deadline["nik"]]["state"] == "IN_TRAINING"
    for who in (cancelled, orphan, late):
        assert life[who["nik"]]["state"] == "REVOKED", who
        assert life[who["nik"]]["reason"] == "NO_TRAINING_IN_TIME"
    assert life[cancelled["nik"]]["amount_returned"] == 1_000_000
    assert life[late["nik"]]["late_purchase"]
    assert life[used["nik"]]["state"] == "AWAITING_TRAINING"
    assert life[used["nik"]]["card_used_at_issuer"]
    assert not life[cancelled["nik"]]["payments"]

    # An agency lists `excluded` after its first installment: the second is stopped, the
    # first is reported as paid before exclusion.
    r = requests.post(
        f"{sim.base_url}/_admin/agencies/civil-service/list",
        json={"nik": excluded["nik"]},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    out = _payout(env, sim, d0 + timedelta(days=37))
    life = _lifecycle(database_url)
    assert life[excluded["nik"]]["state"] == "STOPPED"
    assert life[excluded["nik"]]["reason"] == "EXCLUDED_CIVIL_SERVANT"
    assert life[excluded["nik"]]["payments"][("incentive", 2)]["status"] == "STOPPED"
    assert life[shuffled["nik"]]["payments"][("incentive", 2)]["status"] == "PAID"
    # FAILED is final for its installment; the next one is still paid if the account works
    assert life[failing["nik"]]["payments"][("incentive", 1)]["status"] == "FAILED"
    whole = json.loads(_cli(env, "payout", "report", "--json").stdout)
    assert whole["paid_before_exclusion"] == {"count": 1, "rupiah": 600_000}
    assert whole["conservation_ok"]

    # Months later: the rest of the installments; later payments of the stopped stay stopped.
    _payout(env, sim, d0 + timedelta(days=130))
    life = _lifecycle(database_url)
    assert life[shuffled["nik"]]["state"] == "COMPLETED"
    assert {k: p["status"] for k, p in life[excluded["nik"]]["payments"].items()} == {
        ("incentive", 1): "PAID",
        ("incentive", 2): "STOPPED",
        ("incentive", 3): "STOPPED",
        ("incentive", 4): "STOPPED",
    }
    moved = _paid_at_partner(sim)
    assert moved and set(moved.values()) == {1}  # every key paid exactly once
    whole = json.loads(_cli(env, "payout", "report", "--json").stdout)
    paid_rows = sum(row["paid"] for rows in whole["payments"].values() for row in rows.values())
    assert paid_rows == len(moved)
    assert whole["rupiah_paid"]["incentive"] == 600_000 * sum(
        1 for k in moved if ":incentive:" in k
    )
    recon = _cli(
        env, "payout", "reconcile", "--as-of", (d0 + timedelta(days=130)).isoformat(), "--json"
    )
    assert json.loads(recon.stdout)["ok"]


def test_a_recheck_partner_down_pays_nothing_and_stops_nothing(
    env, simulator, people, database_url
):
    d0 = _day0(people)
    trained = people[0]
    _script(
        simulator,
        "marketplace-a",
        [
            _event(
                "x-1",
                "PURCHASED",
                trained["card_number"],
                "c1",
                _at(d0 + timedelta(days=1)),
                300_000,
            ),
            _event("x-2", "COMPLETED", trained["card_number"], "c1", _at(d0 + timedelta(days=2))),
        ],
    )
    down = {"partners": {"registry": {"down": True}}}
    r = requests.post(f"{simulator.base_url}/_admin/faults", json=down, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    out = _payout(env, simulator, d0 + timedelta(days=3), check=3)
    assert out["end"] == "pending"
    life = _lifecycle(database_url)
    payment = life[trained["nik"]]["payments"][("incentive", 1)]
    assert payment["status"] == "DUE" and payment["checked_on"] is None
    assert life[trained["nik"]]["state"] == "TRAINED"
    assert not _paid_at_partner(simulator)

    requests.post(f"{simulator.base_url}/_admin/faults", json={}, headers=AUTH, timeout=10)
    out = _payout(env, simulator, d0 + timedelta(days=3))
    assert out["end"] == "done"
    assert (
        _lifecycle(database_url)[trained["nik"]]["payments"][("incentive", 1)]["status"] == "PAID"
    )


def _hand_approval(database_url: str, day, shown: dict) -> None:
    from sqlalchemy import insert

    from models.db import make_engine
    from models.tables import PayoutSignOff

    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(PayoutSignOff.__table__),
                [
                    {
                        "as_of": day,
                        "approved_by": "citra",
                        "approver_key": "citra",
                        "host": "h",
                        "via": "cli",
                        "at": datetime(2026, 12, 1),
                        "payments": shown["payments"],
                        "total_amount": shown["total_amount"],
                        "digest": shown["digest"],
                    }
                ],
            )
    finally:
        engine.dispose()


def test_sign_off_then_two_approvals_then_paid(env, simulator, people, database_url):
    d0 = _day0(people)
    _script(
        simulator,
        "marketplace-a",
        [
            _event(
                f"s-{i}-{kind}",
                kind,
                p["card_number"],
                "c1",
                _at(d0 + timedelta(days=1 + (kind == "COMPLETED"))),
                300_000 if kind == "PURCHASED" else None,
            )
            for i, p in enumerate(people[:3])
            for kind in ("PURCHASED", "COMPLETED")
        ],
    )
    day = d0 + timedelta(days=3)
    out = _payout(env, simulator, day, "--sign-off", "2", check=5)
    assert out["end"] == "sign-off"
    assert not _paid_at_partner(simulator)
    shown = json.loads(_cli(env, "payout", "sign-off", "--as-of", day.isoformat(), "--json").stdout)
    assert shown["payments"] == 3 and shown["total_amount"] == 1_800_000
    bad = _cli(
        env,
        "payout",
        "sign-off",
        "--as-of",
        day.isoformat(),
        "--by",
        "ani",
        "--digest",
        "0" * 64,
        check=2,
    )
    assert "changed since it was shown" in bad.stderr
    _cli(
        env,
        "payout",
        "sign-off",
        "--as-of",
        day.isoformat(),
        "--by",
        "ani",
        "--digest",
        shown["digest"],
    )
    approve = ("payout", "sign-off", "--as-of", day.isoformat(), "--digest", shown["digest"])
    again = _cli(env, *approve, "--by", "ani", check=2)
    assert "already approved" in again.stderr
    # A payout_sign_off row written by hand (no audit row): it releases nothing.
    _hand_approval(database_url, day, shown)
    _payout(env, simulator, day, check=5)
    assert not _paid_at_partner(simulator)
    _cli(env, *approve, "--by", "budi")
    out = _payout(env, simulator, day)
    assert out["end"] == "done"
    assert len(_paid_at_partner(simulator)) == 3
    audit = json.loads(_cli(env, "audit", "--json").stdout)
    actions = [a["action"] for a in audit]
    assert actions.count("payout.sign-off") == 2 and "payout.run" in actions


def test_two_payout_runs_never_interleave(env, simulator, people, database_url):
    from runtime import app as runtime
    from services.lease import hold_wave_lease
    from tasks.waves import PAYOUT_LEASE

    app = runtime.configure(database=database_url)
    try:
        from services.payouts import _ensure_lease_row

        _ensure_lease_row(app)
        with hold_wave_lease(app.sessions, PAYOUT_LEASE):
            busy = _cli(env, "payout", "run", "--as-of", "2030-01-01", check=4)
            assert "being run by another live process" in busy.stderr
    finally:
        runtime.reset()


def _train(sim, people: list[dict], d0: date, prefix: str) -> None:
    """Each of `people` buys a course on day 1 and completes it on day 2."""
    _script(
        sim,
        "marketplace-a",
        [
            _event(
                f"{prefix}-{i}-{kind}",
                kind,
                p["card_number"],
                "c1",
                _at(d0 + timedelta(days=1 if kind == "PURCHASED" else 2)),
                300_000 if kind == "PURCHASED" else None,
            )
            for i, p in enumerate(people)
            for kind in ("PURCHASED", "COMPLETED")
        ],
    )


def _faults(sim, partners: dict) -> None:
    r = requests.post(
        f"{sim.base_url}/_admin/faults", json={"partners": partners}, headers=AUTH, timeout=10
    )
    assert r.status_code == 200, r.text


def test_lost_answers_are_looked_up_never_paid_again(env, simulator, people, database_url):
    from partners.simulator.truth import PAYMENT_PROVIDERS

    d0 = _day0(people)
    _train(simulator, people, d0, "lost")
    # Half the disbursements take effect and their answer is lost.
    _faults(simulator, {p: {"rate_lost_answer": 0.5} for p in PAYMENT_PROVIDERS})
    day = d0 + timedelta(days=3)
    first = _payout(env, simulator, day, check=None)
    assert first["exit_code"] in (0, 3)
    _faults(simulator, {})
    _payout(env, simulator, day)
    moved = _paid_at_partner(simulator)
    life = _lifecycle(database_url)
    paid = [p for person in life.values() for p in person["payments"].values()]
    assert {p["status"] for p in paid} <= {"PAID", "FAILED"}
    assert sum(p["status"] == "PAID" for p in paid) == len(moved)
    assert set(moved.values()) == {1}


def test_kill_9_mid_disbursement_then_a_rerun_pays_every_key_once(
    env, simulator, people, database_url
):
    import signal
    import subprocess
    import sys
    import time as clock

    from partners.simulator.truth import PAYMENT_PROVIDERS

    d0 = _day0(people)
    _train(simulator, people, d0, "kill")
    # Slow payment partners, one payment per call: the run is mid-disbursement for seconds.
    _faults(simulator, {p: {"latency_ms": 700, "batch_size": 1} for p in PAYMENT_PROVIDERS})
    day = d0 + timedelta(days=3)
    _clock(simulator, day)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "payout", "run", "--as-of", day.isoformat()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    engine = create_engine(database_url)
    try:
        deadline = clock.monotonic() + 240
        while clock.monotonic() < deadline:
            with engine.connect() as conn:
                paid = conn.execute(
                    text("SELECT count(*) FROM payment WHERE status = 'PAID'")
                ).scalar_one()
            if paid >= 1:
                break
            assert process.poll() is None, "the run ended before it was killed"
            clock.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(text("SELECT status, count(*) FROM payment GROUP BY status")).all()
            )
    finally:
        engine.dispose()
    assert statuses.get("PAID", 0) >= 1
    assert statuses.get("SENDING", 0) + statuses.get("DUE", 0) >= 1, statuses  # killed midway
    _faults(simulator, {})
    _payout(env, simulator, day)
    moved = _paid_at_partner(simulator)
    life = _lifecycle(database_url)
    payments = [p for person in life.values() for p in person["payments"].values()]
    assert {p["status"] for p in payments} <= {"PAID", "FAILED"}
    assert sum(p["status"] == "PAID" for p in payments) == len(moved)
    assert set(moved.values()) == {1}


def test_a_survey_answered_is_paid_once_at_the_next_run(env, simulator, people, database_url):
    d0 = _day0(people)
    _train(simulator, people[:2], d0, "survey")
    _payout(env, simulator, d0 + timedelta(days=3))
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO survey_response (registrant_id, survey, answers_json, answered_at) "
                "VALUES (:r, 1, '{}', :at)"
            ),
            {"r": people[0]["id"], "at": datetime(2026, 1, 1)},
        )
    engine.dispose()
    out = _payout(env, simulator, d0 + timedelta(days=4))
    survey = _lifecycle(database_url)[people[0]["nik"]]["payments"][("survey", 1)]
    assert survey["status"] == "PAID" and survey["amount"] == 50_000
    assert out["report"]["payments"]["survey"]["1"]["paid"] == 1
    _payout(env, simulator, d0 + timedelta(days=5))
    assert sum(1 for k in _paid_at_partner(simulator) if ":survey:" in k) == 1
    explained = _cli(env, "explain", "--wave", "1", "--nik", people[0]["nik"], "--json")
    assert "survey" in explained.stdout and "incentive" in explained.stdout
