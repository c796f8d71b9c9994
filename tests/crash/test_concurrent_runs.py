"""Two `wave run` of one wave at the same time: one runs, the other is refused at once with
a clear message (exit 4), and they never interleave: every partner item is sent once and
the outcome export is a single run's."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.crash.conftest import (
    ROOT,
    STEP_TIMEOUT,
    ProgramDB,
    Sim,
    WaveProcess,
    exported_outcomes,
    partners_file,
    wait_until,
    wave_run_args,
)

# A slow issuer, so that a third run can be started while the first is crediting.
FAULTS = {"seed": "crash-faults", "partners": {"card-issuer": {"latency_ms": 300}}}
OVERRIDES = {"card_issuer": {"max_concurrency": 2}}
BUSY = "is being run by another live process"


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path, FAULTS).start()
    yield s
    s.stop()


def test_two_runs_of_one_wave_at_once_never_interleave(crash_wave, sim, run_env, tmp_path):
    from models.db import init_db, make_engine

    env = dict(
        run_env,
        PRAKERJA_PARTNERS=str(partners_file(tmp_path / "p.toml", sim.base_url, OVERRIDES)),
    )
    db = ProgramDB(tmp_path / "program.db")
    # A database in use (its tables exist), without the wave: both runs try to create it.
    engine = make_engine(db.url)
    init_db(engine)
    engine.dispose()
    args = wave_run_args(crash_wave.export)
    a = WaveProcess(args, env, tmp_path, "run-a")
    b = WaveProcess(args, env, tmp_path, "run-b")
    runs = [a, b]
    try:
        wait_until(lambda: not a.alive() or not b.alive(), "one of two runs ends")
        refused, winner = (a, b) if not a.alive() else (b, a)
        assert refused.proc.returncode == 4, refused.tail()
        assert BUSY in refused.stderr() and "Traceback" not in refused.stderr()
        assert time.monotonic() - refused.started < 30

        # A third run while the first is crediting is refused the same way, at once.
        wait_until(
            lambda: (s := db.snapshot())["ledger_rows"] > 0 and s["confirmed"] > 0,
            "the winning run is crediting",
            run=winner,
        )
        third = WaveProcess(args, env, tmp_path, "run-c")
        runs.append(third)
        assert third.wait(60) == 4, third.tail()
        assert BUSY in third.stderr()
        assert winner.alive()  # the refused runs did not disturb it

        assert winner.wait(STEP_TIMEOUT) == 0, winner.tail()
    finally:
        for r in runs:
            r.kill()

    # Never interleaved: each partner was asked about each item once.
    stats = sim.stats()
    items = stats["items"]
    ledger_rows = db.one("SELECT count(*) FROM ledger")
    messages = db.one("SELECT count(*) FROM message")
    credited = db.one("SELECT count(*) FROM registrant WHERE state='CREDITED'")
    identity = db.one("SELECT count(*) FROM registrant WHERE identity_at IS NOT NULL")
    accounts = db.one("SELECT count(*) FROM registrant WHERE account_at IS NOT NULL")
    assert credited > 0
    assert items.get("card-issuer") == ledger_rows == credited
    assert stats["credits_applied"] == credited
    assert items.get("notifier") == messages == credited
    assert stats["messages_duplicate_keys"] == 0
    assert items.get("registry") == identity
    payment = sum(n for p, n in items.items() if p.startswith(("bank-", "wallet-")))
    assert payment == accounts

    # The outcome is a single run's.
    got = exported_outcomes(env, tmp_path / "outcomes.csv")
    assert got == crash_wave.expected


def test_two_processes_opening_a_new_database_at_once(tmp_path):
    code = "from runtime.app import configure; configure()"
    for attempt in range(4):
        env = {"PRAKERJA_DATABASE_URL": f"sqlite:///{tmp_path}/new-{attempt}.db", "PATH": ""}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        results = [(p.wait(60), p.stderr.read().decode()) for p in procs]
        for rc, err in results:
            assert rc == 0, [line for line in err.splitlines() if "Error" in line][-1:]
