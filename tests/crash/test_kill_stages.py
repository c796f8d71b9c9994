"""kill -9 of `wave run` in every stage before the rollout, and of one worker process in
the middle of a batch, on SQLite and PostgreSQL: each time the same command again, until
the wave ends exactly as one uninterrupted run would (the oracle), with nobody paid or
told twice and a clean reconciliation.

One wave, one simulator process (it outlives every killed run), and one run per kill
point, each starting where the last one was killed:

1. intake part-way: some rows of the export stored, not all (intake commits
   INTAKE_CHUNK_ROWS rows per transaction in these runs, as a big export's chunks);
2. identity part-way: some registry answers recorded, some registrants still waiting;
3. one worker process (runtime.workers' pool) killed with SIGKILL while the workers run
   identity batches, not the run: its batches fail, the run ends by itself (exit 1)
   and the next run takes them up;
4. screening part-way;
5. the draw: recorded (one transaction), no payout account checked yet;
6. accounts part-way: some of the drawn have an answer, some not;
7. backfill: a round has given freed seats to the waitlist, their accounts not all checked;

then the run that finishes (the rollout and the SMS sending, whose kill points are
tests/crash/test_kill_wave_run.py's). The partners are slow (latency_ms) and batches
small (PRAKERJA_BATCH_SIZE), so that each moment lasts long enough to be seen in the
program database and hit; the issuer also loses answers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.cli_process import run_cli
from tests.crash.conftest import (
    STEP_TIMEOUT,
    ChunkedIntakeRun,
    PostgresProgramDB,
    ProgramDB,
    Sim,
    empty_postgres,
    exported_outcomes,
    partners_file,
    wait_until,
    wave_run_args,
    worker_pids,
)

POSTGRES_URL = os.environ.get("PRAKERJA_TEST_POSTGRES_URL")
AGENCIES = (
    "civil-service",
    "military-police",
    "education",
    "village",
    "legislature",
    "soe",
    "social-aid",
    "manpower",
)
PROVIDERS = ("bank-a", "bank-b", "wallet-a", "wallet-b")


# Batches of 10 (not the crash default of 5: half the Prefect task runs) and two worker
# processes (the fewest that still run batches in workers), for a quicker test.
BATCH = 10
WORKERS = 2


def faults() -> dict:
    """Slow partners (each batch takes a few tenths of a second); the issuer loses answers."""
    partners: dict[str, dict] = {"registry": {"latency_ms": 150}}
    partners |= {a: {"latency_ms": 20} for a in AGENCIES}  # asked in turn: 0.16 s a batch
    partners |= {p: {"latency_ms": 200} for p in PROVIDERS}
    partners["card-issuer"] = {"latency_ms": 30, "rate_lost_answer": 0.3}
    partners["notifier"] = {"latency_ms": 10}
    return {"seed": "crash-stage-faults", "partners": partners}


OVERRIDES = {
    "card_issuer": {"retry_attempts": 12, "retry_backoff_s": 0.1, "retry_backoff_max_s": 0.5},
}


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path, faults()).start()
    yield s
    s.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def program(request, run_env, tmp_path):
    """(environment, read-only look) of an empty program database of each kind."""
    if request.param == "sqlite":
        yield run_env, ProgramDB(tmp_path / "program.db")
        return
    if not POSTGRES_URL:
        pytest.skip("PRAKERJA_TEST_POSTGRES_URL is not set")
    empty_postgres(POSTGRES_URL)
    db = PostgresProgramDB(POSTGRES_URL)
    yield dict(run_env, PRAKERJA_DATABASE_URL=POSTGRES_URL), db
    db.close()


def counts(db: ProgramDB) -> dict:
    """The counts that name each kill point of this test."""
    states = Counter(
        dict(db.rows("SELECT state, count(*) FROM registrant WHERE wave_id=1 GROUP BY state"))
    )
    row = db.rows(
        "SELECT count(*), count(identity_at), count(screening_at), count(account_at), "
        "max(draw_round), "
        "sum(CASE WHEN state='SELECTED' AND draw_round>0 THEN 1 ELSE 0 END) "
        "FROM registrant WHERE wave_id=1"
    )
    total, identity, screened, accounts, last_round, backfilled_waiting = (
        row[0] if row else (0, 0, 0, 0, None, 0)
    )
    wave = db.rows("SELECT intake_done, drawn_at FROM wave WHERE wave_id=1")
    return {
        "rows": total or 0,
        "intake_done": bool(wave and wave[0][0]),
        "drawn": bool(wave and wave[0][1] is not None),
        "states": states,
        "identity_answered": identity or 0,
        "screened": screened or 0,
        "accounts_answered": accounts or 0,
        "last_round": last_round,
        "backfilled_waiting": backfilled_waiting or 0,
        "ledger": db.one("SELECT count(*) FROM ledger") or 0,
        "messages": db.one("SELECT count(*) FROM message") or 0,
    }


def test_kill_9_in_every_stage_and_of_a_worker_converges(crash_wave, sim, program, tmp_path):
    env, db = program
    env = dict(
        env,
        PRAKERJA_PARTNERS=str(partners_file(tmp_path / "p.toml", sim.base_url, OVERRIDES)),
        PRAKERJA_BATCH_SIZE=str(BATCH),
        PRAKERJA_WORKER_PROCESSES=str(WORKERS),
    )
    args = wave_run_args(crash_wave.export)
    lines = len(crash_wave.expected)
    runs: list[ChunkedIntakeRun] = []
    kills: dict[str, dict] = {}
    started = time.monotonic()

    def start() -> ChunkedIntakeRun:
        run = ChunkedIntakeRun(args, env, tmp_path, f"run-{len(runs) + 1}")
        runs.append(run)
        return run

    def reach(what: str, moment, every: float = 0.02) -> ChunkedIntakeRun:
        """Starts the command and waits until `moment(before, now, run)` holds while it
        works (`before`, `now`: counts when it started and now); a run that ends first
        is a failure."""
        run = start()
        before = counts(db)
        wait_until(lambda: moment(before, counts(db), run), what, run=run, every=every)
        return run

    def kill(run: ChunkedIntakeRun, point: str) -> dict:
        run.kill()
        snap = counts(db)
        kills[point] = snap
        return snap

    try:
        # 1. Intake part-way. Rows go in 1 at a time, in a second or two: a look that
        # comes too late (intake settled) starts the wave again from an empty database.
        for attempt in range(3):
            run = reach(
                "intake part-way",
                lambda _b, c, _r: c["rows"] and not c["intake_done"],
                every=0.002,
            )
            snap = kill(run, "intake part-way")
            snap["attempt"] = attempt + 1
            if not snap["intake_done"]:
                break
            if isinstance(db, PostgresProgramDB):
                empty_postgres(POSTGRES_URL)
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db.path}{suffix}").unlink(missing_ok=True)
        assert 0 < snap["rows"] <= lines and not snap["intake_done"], snap
        assert snap["identity_answered"] == 0

        # 2. Identity part-way: a few batches answered, most still to do (for 3.).
        run = reach(
            "identity part-way",
            lambda _b, c, _r: c["identity_answered"] >= 2 * BATCH and c["states"]["AWAIT_IDENTITY"],
            every=0.05,
        )
        snap = kill(run, "identity part-way")
        assert snap["intake_done"] and snap["states"]["AWAIT_IDENTITY"] > 0, snap

        # 3. One worker process killed mid-batch, while identity batches run in the
        # workers: two workers and twice as many batch tasks, so each worker always has
        # a batch (and a registry call of 0.15 s) in hand. The run itself is not killed:
        # the batches of the dead worker's pool fail (BrokenProcessPool, nothing of them
        # written: one transaction each, after the call), later ones get a new pool, and
        # the stage fails at its end (exit 1). Should a run one day survive a worker's
        # death and go on, it is killed at 4. instead.
        def screening_part_way(b, c, _r) -> bool:
            return c["screened"] > b["screened"] and c["states"]["AWAIT_SCREENING"] > 0

        run = reach(
            "identity batches in the worker processes",
            lambda b, c, r: (
                c["identity_answered"] > b["identity_answered"]
                and c["states"]["AWAIT_IDENTITY"] >= 4 * BATCH
                and len(worker_pids(r.pid)) >= 2
            ),
            every=0.05,
        )
        before = counts(db)
        victim = worker_pids(run.pid)[-1]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in worker_pids(run.pid), "the worker is gone")
        wait_until(
            lambda: not run.alive() or screening_part_way(before, counts(db), run),
            "the run ends or screens",
            every=0.05,
        )
        survived = run.alive()
        kills["worker process mid-batch"] = {
            **before,
            "run_exit": "survived" if survived else run.wait(),
            "broken_pool_seen": "BrokenProcessPool" in run.stderr(),
        }
        if not survived:
            assert run.proc.returncode in (1, 3), run.tail()
            # 4. Screening part-way, in the next run.
            run = reach("screening part-way", screening_part_way, every=0.05)
        snap = kill(run, "screening part-way")
        assert snap["states"]["AWAIT_IDENTITY"] == 0 < snap["states"]["AWAIT_SCREENING"], snap
        assert not snap["drawn"]

        # 5. The draw: one transaction; killed once it is recorded, before any payout
        # account is checked (the rerun must not draw again).
        run = reach(
            "drawn, no account checked",
            lambda _b, c, _r: c["drawn"] and not c["accounts_answered"],
            every=0.05,
        )
        snap = kill(run, "draw recorded, accounts not started")
        assert snap["drawn"] and snap["states"]["SELECTED"] > 0 and not snap["accounts_answered"]
        drawn = set(db.rows("SELECT id FROM registrant WHERE wave_id=1 AND draw_round=0"))

        # 6. Accounts part-way: some of the drawn answered, some still SELECTED.
        run = reach(
            "accounts part-way",
            lambda b, c, _r: (
                c["accounts_answered"] > b["accounts_answered"]
                and c["states"]["SELECTED"] > 0
                and c["last_round"] == 0
            ),
            every=0.05,
        )
        snap = kill(run, "accounts part-way")
        assert snap["states"]["SELECTED"] > 0 and snap["accounts_answered"] > 0, snap

        # 7. Backfill: a round has given freed seats, their accounts not all checked.
        run = reach(
            "a backfill round in progress",
            lambda _b, c, _r: (c["last_round"] or 0) >= 1 and c["backfilled_waiting"] > 0,
            every=0.05,
        )
        snap = kill(run, "backfill round in progress")
        assert snap["last_round"] >= 1 and snap["backfilled_waiting"] > 0, snap
        assert set(db.rows("SELECT id FROM registrant WHERE wave_id=1 AND draw_round=0")) == drawn

        # Then the same command until it exits 0 (3 = partner failures left pending).
        for _ in range(3):
            run = start()
            code = run.wait(STEP_TIMEOUT)
            assert code in (0, 3), run.tail()
            if code == 0:
                break
        assert code == 0, run.tail()
    finally:
        for r in runs:
            r.kill()
    seconds = time.monotonic() - started

    # The draw killed once recorded was not drawn again (nor changed by any later run).
    assert set(db.rows("SELECT id FROM registrant WHERE wave_id=1 AND draw_round=0")) == drawn
    check_paid_once_and_converged(crash_wave, sim, db, env, tmp_path)
    print(
        "\nstage kill summary:",
        json.dumps(
            {
                "database": "postgresql" if isinstance(db, PostgresProgramDB) else "sqlite",
                "kill_points": {
                    k: {x: (dict(v) if isinstance(v, Counter) else v) for x, v in s.items()}
                    for k, s in kills.items()
                },
                "runs": len(runs),
                "run_seconds": [round(r.ended - r.started, 1) for r in runs if r.ended],
                "seconds": round(seconds, 1),
            },
            default=str,
        ),
    )


def check_paid_once_and_converged(crash_wave, sim, db: ProgramDB, env: dict, tmp_path) -> None:
    """Outcomes of one uninterrupted run (the oracle), line by line; every credit applied
    once at the issuer and recorded once; one SMS per participant; reconciliation clean."""
    # Nothing lost, nothing decided differently.
    got = exported_outcomes(env, tmp_path / "outcomes.csv")
    lost = sorted(set(crash_wave.expected) - set(got))
    extra = sorted(set(got) - set(crash_wave.expected))
    wrong = {
        line: (got[line], want)
        for line, want in crash_wave.expected.items()
        if line in got and got[line] != want
    }
    assert not lost and not extra, f"lost lines {lost[:10]}, unknown lines {extra[:10]}"
    assert not wrong, f"{len(wrong)} outcomes differ (got, want), e.g. {list(wrong.items())[:5]}"
    want_credited = sum(1 for o, _r in crash_wave.expected.values() if o == "CREDITED")
    # The oracle's wave has backfill rounds (failed accounts free seats): 7. is reachable.
    assert any(r.startswith("ACCOUNT_") for _o, r in crash_wave.expected.values())

    credited = {
        nik for (nik,) in db.rows("SELECT nik FROM registrant WHERE wave_id=1 AND state='CREDITED'")
    }
    assert len(credited) == want_credited > 0
    assert db.one("SELECT count(*) FROM registrant WHERE wave_id=1") == len(crash_wave.expected)

    # Money: the issuer applied each participant's credit once; the ledger is its statement.
    stats, journal, statement = sim.stats(), sim.journal(), sim.statement()
    statement_keys = Counter(e["idempotency_key"] for e in statement)
    applied_by_nik = Counter(
        line["body"][1]
        for line in journal
        if line["type"] == "credit" and line["result"]["status"] == "APPLIED"
    )
    double_credits = sum(n - 1 for n in statement_keys.values() if n > 1)
    double_credits += sum(n - 1 for n in applied_by_nik.values() if n > 1)
    assert double_credits == 0, (statement_keys.most_common(3), applied_by_nik.most_common(3))
    assert stats["credits_applied"] == len(statement) == len(credited)
    assert set(applied_by_nik) == credited
    ledger = set(
        db.rows(
            "SELECT idempotency_key, card_number, amount, transfer_id FROM ledger "
            "WHERE wave_id=1 AND status='APPLIED'"
        )
    )
    assert ledger == {
        (e["idempotency_key"], e["card_number"], e["amount"], e["transfer_id"]) for e in statement
    }
    assert db.one("SELECT count(*) FROM ledger WHERE status<>'APPLIED'") == 0

    # SMS: one per credited participant, each accepted once by the gateway.
    outbox = db.rows("SELECT nik, idempotency_key, status FROM message WHERE wave_id=1")
    per_nik = Counter(nik for nik, _k, _s in outbox)
    assert max(per_nik.values()) == 1 and set(per_nik) == credited
    gateway = [line for line in journal if line["type"] == "message"]
    gateway_keys = Counter(line["key"] for line in gateway)
    accepted_by_nik = Counter(
        line["key"].split(":")[1] for line in gateway if line["result"]["status"] == "ACCEPTED"
    )
    assert max(gateway_keys.values()) == 1 and max(accepted_by_nik.values()) == 1
    accepted = {k for _n, k, s in outbox if s == "ACCEPTED"}
    assert stats["messages_accepted"] == len(accepted) == len(credited)
    assert {line["key"] for line in gateway if line["result"]["status"] == "ACCEPTED"} == accepted

    # The wave's own accounts: reconciliation and the report agree with the above.
    recon = run_cli(["wave", "reconcile", "--wave", "1", "--json"], env)
    assert recon.returncode == 0, recon.stdout + recon.stderr[-3000:]
    doc = json.loads(recon.stdout)
    assert doc["ok"] and doc["ledger_count"] == doc["statement_count"] == len(credited), doc
    report = run_cli(["wave", "report", "--wave", "1", "--json"], env)
    assert report.returncode == 0, report.stderr[-3000:]
    outcomes = {k: v for k, v in json.loads(report.stdout)["outcomes"].items() if v}
    assert outcomes == dict(Counter(o for o, _r in crash_wave.expected.values()))
