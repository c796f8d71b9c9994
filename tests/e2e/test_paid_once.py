"""Paid once in the program (wave-rules.md): overlapping waves never credit a NIK twice.

The scenario of issue 11, small: wave 1 is kept open with a small quota, so most of its
eligible registrants wait on its waitlist; wave 2 (the same people registering again,
same NIKs, same lottery seed, so the same order) selects and credits the next ones in
line; then wave 1's quota is raised. The people wave 1 would now select were credited by
wave 2: each must be rejected in wave 1 with PRIOR_RECIPIENT and the seat go to the next
in line, nobody may be credited twice (ledger, card issuer), and reconciliation is clean.

Everything runs as an operator would: the real simulator over HTTP and `python -m cli`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, text

from tests.cli_process import run_cli

SEED = "paid-once-seed"
LOTTERY = "paid-once-lottery"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 300
QUOTA_1 = 8  # wave 1 at first: most of its eligible registrants stay waitlisted
QUOTA_2 = 25  # wave 2 credits the next ones in line
QUOTA_1_RAISED = 40  # wave 1 then reaches past everyone wave 2 took
SIM_AUTH = {"Authorization": "Bearer simulator"}
ACCOUNT_REASONS = {
    "ACCOUNT_NOT_FOUND",
    "ACCOUNT_NIK_MISMATCH",
    "ACCOUNT_NOT_KYC",
    "ACCOUNT_BLOCKED",
}


@pytest.fixture
def simulator():
    from partners.simulator.server import SimulatorThread

    with SimulatorThread(SEED) as sim:
        yield sim


@pytest.fixture
def rt(database_url, simulator):
    """This process's runtime, to look at the database and the issuer between commands."""
    from partners.config import simulator_config
    from runtime import app as runtime

    yield runtime.configure(
        database=database_url, partners_config=simulator_config(simulator.base_url)
    )
    runtime.reset()


@pytest.fixture
def env(prefect_server, database_url, simulator, tmp_path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    from tests.crash.conftest import partners_file

    env = dict(os.environ)
    env["PRAKERJA_DATABASE_URL"] = database_url
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env["PRAKERJA_PARTNERS"] = str(partners_file(tmp_path / "partners.toml", simulator.base_url))
    env["PRAKERJA_WORKERS"] = "1"
    env["PRAKERJA_SIMULATOR_API_KEY"] = "simulator"  # named by partners_file's sections
    return env


def run_wave(wave_id: int, export: Path, quota: int, env, *extra: str) -> None:
    done = run_cli(
        [
            "wave",
            "run",
            "--wave",
            str(wave_id),
            "--registrants",
            str(export),
            "--quota",
            str(quota),
            "--lottery-seed",
            LOTTERY,
            "--reference-date",
            REFERENCE.isoformat(),
            *extra,
        ],
        env,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def exported(wave_id: int, env, tmp_path: Path, *, rt=None) -> dict[str, tuple[str, str]]:
    """nik -> (outcome, reason) from `wave export` (or, with `rt`, the same function in
    this process: quicker for the looks before the end); rows without a NIK left out."""
    out = tmp_path / f"outcomes-{wave_id}.csv"
    if rt is None:
        done = run_cli(["wave", "export", "--wave", str(wave_id), "--out", str(out)], env)
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        from readmodels.reporting import export_outcomes

        export_outcomes(rt.sessions, wave_id, out)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {
        r["nik"]: (r["outcome"], r["reason"])
        for r in rows
        if r["nik"] and r["reason"] != "DUPLICATE_NIK"
    }


def reconciled(wave_id: int, env) -> dict:
    done = run_cli(["wave", "reconcile", "--wave", str(wave_id), "--json"], env)
    result = json.loads(done.stdout)
    assert done.returncode == 0, result
    return result


def statement_niks(sim, wave_id: int) -> list[str]:
    """The NIK of every credit the card issuer applied under the wave's reference."""
    niks, after = [], None
    while True:
        params = {"reference": f"wave-{wave_id}/training", "limit": 1000}
        if after is not None:
            params["after"] = after
        r = requests.get(
            f"{sim.base_url}/issuer/v1/statements", params=params, headers=SIM_AUTH, timeout=10
        )
        assert r.status_code == 200, r.text
        page = r.json()
        niks += [e["idempotency_key"].split(":")[1] for e in page["entries"]]
        after = page["next"]
        if after is None:
            return niks


def test_a_quota_raise_in_an_open_wave_never_pays_a_later_waves_participant_again(
    env, rt, database_url, simulator, tmp_path
):
    from partners.simulator.generate import generate_export

    export_1 = tmp_path / "wave-1.csv"
    generate_export(export_1, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
    export_2 = tmp_path / "wave-2.csv"  # everyone registers again: the same NIKs
    shutil.copyfile(export_1, export_2)

    run_wave(1, export_1, QUOTA_1, env, "--keep-open")
    before_raise = exported(1, env, tmp_path, rt=rt)
    waitlisted_1 = {n for n, (o, _r) in before_raise.items() if o == "WAITLISTED"}
    credited_1 = {n for n, (o, _r) in before_raise.items() if o == "CREDITED"}
    assert credited_1 and len(waitlisted_1) > QUOTA_1_RAISED + QUOTA_2

    run_wave(2, export_2, QUOTA_2, env)
    wave_2 = exported(2, env, tmp_path, rt=rt)
    credited_2 = {n for n, (o, _r) in wave_2.items() if o == "CREDITED"}
    confirmed_2 = credited_2 | {n for n, (o, r) in wave_2.items() if r == "CREDIT_REJECTED"}
    # Wave 1's participants were already turned away by wave 2's local check.
    assert all(wave_2[n] == ("REJECTED", "PRIOR_RECIPIENT") for n in credited_1)
    # Same seed, same order: wave 2 took the head of wave 1's waitlist.
    taken = credited_2 & waitlisted_1
    assert len(taken) >= QUOTA_2 // 2, (len(taken), len(credited_2))

    done = run_cli(["wave", "raise-quota", "--wave", "1", "--quota", str(QUOTA_1_RAISED)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    wave_1 = exported(1, env, tmp_path)

    # 1. The ledger holds one live credit per person; nobody has two applied credits.
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            twice = conn.execute(
                text(
                    "SELECT nik, count(*) FROM ledger WHERE status = 'APPLIED' "
                    "GROUP BY nik, benefit HAVING count(*) > 1"
                )
            ).all()
            order = conn.execute(
                text(
                    "SELECT nik, state, reason, draw_round FROM registrant "
                    "WHERE wave_id = 1 AND draw_key IS NOT NULL "
                    "ORDER BY priority DESC, draw_key ASC"
                )
            ).all()
    finally:
        engine.dispose()
    assert not twice, f"{len(twice)} NIKs credited more than once in the program"

    # 2. The card issuer saw each NIK credited at most once, over both waves.
    applied = Counter(statement_niks(simulator, 1) + statement_niks(simulator, 2))
    assert applied and max(applied.values()) == 1, applied.most_common(3)
    stats = requests.get(f"{simulator.base_url}/_admin/stats", timeout=5).json()
    assert stats["credits_applied"] == sum(applied.values())

    # 3. Whoever wave 2 confirmed is PRIOR_RECIPIENT in wave 1, not a participant.
    for nik in confirmed_2 & waitlisted_1:
        assert wave_1[nik] == ("REJECTED", "PRIOR_RECIPIENT"), (nik, wave_1[nik])
    prior_1 = {n for n, (o, r) in wave_1.items() if r == "PRIOR_RECIPIENT"}
    assert prior_1 == confirmed_2 & waitlisted_1

    # 4. Their seats went to the next in line: wave 1 holds its raised quota, and everyone
    # still waiting comes after everyone given a seat, in draw order.
    held = [
        nik
        for nik, _state, reason, draw_round in order
        if draw_round is not None and reason not in ACCOUNT_REASONS | {"PRIOR_RECIPIENT"}
    ]
    assert len(held) == QUOTA_1_RAISED
    positions = {nik: i for i, (nik, *_rest) in enumerate(order)}
    waiting = [positions[nik] for nik, state, *_rest in order if state == "WAITLISTED"]
    assert waiting and min(waiting) > max(positions[nik] for nik in held)
    credited_1_now = {n for n, (o, _r) in wave_1.items() if o == "CREDITED"}
    assert credited_1 < credited_1_now
    assert not credited_1_now & credited_2

    # 5. Reconciliation is clean for both waves, program-wide check included.
    from readmodels.reporting import reconcile

    assert reconciled(1, env)["ok"]
    result = reconcile(rt.sessions, rt.partners.issuer, 2)
    assert result["ok"] and result["paid_more_than_once_in_program"] == 0, result


def test_a_credit_lost_to_another_wave_frees_its_seat_for_the_next_in_line_in_the_same_run(
    prefect_server, database_url, simulator, tmp_path
):
    """Both waves confirmed a NIK (their account checks passed at once) and the other wave
    credited it first: at wave 1's rollout the ledger refuses wave 1's credit, the NIK is
    PRIOR_RECIPIENT there, and the same run gives the seat to the next in line."""
    from datetime import datetime, time

    from sqlalchemy import select, update

    from cli import run_wave_command
    from models.tables import LedgerEntry, Registrant
    from partners.config import simulator_config
    from partners.simulator.generate import generate_export
    from rules.money import card_number_for
    from runtime.app import get_runtime
    from tasks.draw import free_seats, raise_quota

    R, L = Registrant.__table__, LedgerEntry.__table__
    export = tmp_path / "wave.csv"
    generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)

    def run(wave_id: int, quota: int | None, keep_open: bool) -> None:
        code = run_wave_command(
            wave_id=wave_id,
            registrants=str(export) if quota is not None else None,
            quota=quota,
            lottery_seed=LOTTERY if quota is not None else None,
            keep_open=keep_open,
            draw_without_pending=False,
            flags={"reference_date": datetime.combine(REFERENCE, time())} if quota else {},
            partners_config=simulator_config(simulator.base_url),
            quiet=True,
        )
        assert code == 0

    run(1, QUOTA_1, keep_open=True)
    run(2, 3, keep_open=False)  # credits the head of wave 1's waitlist
    sessions = get_runtime().sessions
    with sessions() as session:
        credited_2 = set(
            session.execute(
                select(R.c.nik).where(R.c.wave_id == 2, R.c.state == "CREDITED")
            ).scalars()
        )
        # The first of them in wave 1's order: wave 1 confirmed it too, at the same time.
        (x_id, x_nik) = session.execute(
            select(R.c.id, R.c.nik)
            .where(R.c.wave_id == 1, R.c.state == "WAITLISTED", R.c.nik.in_(credited_2))
            .order_by(R.c.priority.desc(), R.c.draw_key)
            .limit(1)
        ).one()
    raise_quota(sessions, 1, QUOTA_1 + 1)
    with sessions() as session, session.begin():
        session.execute(
            update(R)
            .where(R.c.id == x_id)
            .values(
                state="CONFIRMED",
                draw_round=1,
                drawn_at=datetime(2026, 11, 28),
                card_number=card_number_for(x_id),
                confirmed_at=datetime(2026, 11, 28),
            )
        )
    with sessions() as session:
        assert free_seats(session, 1) == 0

    run(1, None, keep_open=True)

    sessions = get_runtime().sessions
    with sessions() as session:
        x = session.execute(select(R.c.state, R.c.reason).where(R.c.id == x_id)).one()
        assert tuple(x) == ("REJECTED", "PRIOR_RECIPIENT")
        assert not session.execute(
            select(L.c.id).where(L.c.wave_id == 1, L.c.nik == x_nik)
        ).all(), "wave 1 never wrote, nor sent, a credit for it"
        twice = session.execute(
            select(L.c.nik)
            .where(L.c.status == "APPLIED")
            .group_by(L.c.nik, L.c.benefit)
            .having(func.count() > 1)
        ).all()
        assert not twice
        # The seat went to the next in line, who was credited in the same run.
        held = session.execute(
            select(func.count()).where(
                R.c.wave_id == 1, R.c.state.in_(["CREDITED", "CONFIRMED", "SELECTED"])
            )
        ).scalar_one()
        rejected_credit = session.execute(
            select(func.count()).where(R.c.wave_id == 1, R.c.reason == "CREDIT_REJECTED")
        ).scalar_one()
        assert held + rejected_credit == QUOTA_1 + 1
        assert free_seats(session, 1) == 0
        confirmed_left = session.execute(
            select(func.count()).where(R.c.wave_id == 1, R.c.state.in_(["CONFIRMED", "SELECTED"]))
        ).scalar_one()
        assert confirmed_left == 0
    applied = Counter(statement_niks(simulator, 1) + statement_niks(simulator, 2))
    assert max(applied.values()) == 1
