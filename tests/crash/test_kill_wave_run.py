"""kill -9 of `wave run` in the middle of the rollout and of the SMS sending, then the same
command again until it exits 0: nothing is lost and nobody is paid or told twice.

One wave, one simulator process (it outlives every killed run), and a run per kill point:

1. credits in flight at the issuer, none recorded (the issuer applies them after the
   client died: applied, answer lost);
2. the rollout part-way: some credits recorded, some not;
3. every credit recorded, SMS in flight at the gateway, none recorded as sent;
4. the SMS sending part-way: some recorded as sent, some still queued;

then the run that finishes. The card issuer also loses answers (rate_lost_answer) and is
slow (latency_ms), as is the gateway; batches are small (PRAKERJA_BATCH_SIZE) so that each
moment lasts long enough to be seen in the program database and hit.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.cli_process import run_cli
from tests.crash.conftest import (
    LOTTERY,
    STEP_TIMEOUT,
    ProgramDB,
    Sim,
    WaveProcess,
    exported_outcomes,
    partners_file,
    wait_until,
    wave_run_args,
)


def faults(issuer_ms: int = 400, notifier_ms: int = 400) -> dict:
    """Slow partners; the issuer also loses answers. A kill point that must be hit inside
    one call gets a slower partner for that run (set through the simulator's admin route)."""
    return {
        "seed": "crash-faults",
        "partners": {
            "card-issuer": {"latency_ms": issuer_ms, "rate_lost_answer": 0.5},
            "notifier": {"latency_ms": notifier_ms},
        },
    }


# Few calls at a time, quick retries: the rollout and the sending last a few seconds.
OVERRIDES = {
    "card_issuer": {
        "max_concurrency": 2,
        "retry_attempts": 12,  # half the answers are lost: a batch still gets through
        "retry_backoff_s": 0.2,
        "retry_backoff_max_s": 1.0,
    },
    "notifier": {"max_concurrency": 1, "retry_backoff_s": 0.2, "retry_backoff_max_s": 1.0},
}
LEASE_S = 60


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path, faults()).start()
    yield s
    s.stop()


def test_kill_9_at_any_moment_loses_nothing_and_pays_nobody_twice(
    crash_wave, sim, run_env, tmp_path
):
    env = dict(
        run_env, PRAKERJA_PARTNERS=str(partners_file(tmp_path / "p.toml", sim.base_url, OVERRIDES))
    )
    db = ProgramDB(tmp_path / "program.db")
    args = wave_run_args(crash_wave.export)
    runs: list[WaveProcess] = []
    kills: dict[str, dict] = {}
    lease_waits: list[float] = []

    def start() -> WaveProcess:
        run = WaveProcess(args, env, tmp_path, f"run-{len(runs) + 1}")
        runs.append(run)
        if len(runs) > 1:
            # A killed run's lease never holds the next one up (same host: at once).
            wait_until(
                lambda: run.owns_lease(db),
                f"{run.name} takes the lease",
                run=run,
                timeout=LEASE_S + 10,
            )
            lease_waits.append(time.monotonic() - run.started)
        return run

    def reach(what: str, moment, timeout: float = STEP_TIMEOUT) -> WaveProcess:
        """Runs the command until `moment()` (made fresh for each run, so that it can
        compare with how things stood when that run started) holds while a run works; a
        run that ends first with partner failures left pending (exit 3) is run again."""
        for _ in range(3):
            run = start()
            holds = moment()
            deadline = time.monotonic() + timeout
            while run.alive():
                if holds():
                    return run
                if time.monotonic() > deadline:
                    run.kill()
                    pytest.fail(f"not reached within {timeout:.0f} s: {what}\n{run.tail()}")
                time.sleep(0.03)
            assert run.proc.returncode == 3, f"exited before: {what}\n{run.tail()}"
        pytest.fail(f"not reached in 3 runs: {what}")

    def kill(run: WaveProcess, point: str) -> dict:
        run.kill()
        snap = db.snapshot()
        kills[point] = snap
        return snap

    def gateway_answered() -> int:
        return sum(1 for line in sim.journal() if line["type"] == "message")

    try:
        # 1. Credits in flight at the issuer, none recorded.
        sim.set_faults(faults(issuer_ms=1500))

        def credits_in_flight():
            calls = sim.calls("card-issuer")
            return lambda: (
                (s := db.snapshot())["pending_attempted"] > 0
                and s["applied"] == 0
                and sim.calls("card-issuer") > calls
            )

        run = reach("credits in flight at the issuer, none recorded", credits_in_flight, 150)
        snap = kill(run, "credits in flight, none recorded")
        assert snap["credited"] == 0 and snap["messages"] == 0
        # The issuer finishes the calls it had: applied, but the answer went nowhere.
        wait_until(
            lambda: sim.stats()["credits_applied"] > 0, "in-flight credits applied", timeout=10
        )
        kills["credits in flight, none recorded"]["applied_unrecorded"] = (
            sim.stats()["credits_applied"] - db.snapshot()["applied"]
        )

        # 2. The rollout part-way.
        sim.set_faults(faults())

        def rollout_part_way():
            applied = db.snapshot()["applied"]
            return lambda: (s := db.snapshot())["applied"] > applied and s["confirmed"] > 0

        run = reach("some credits recorded, some not", rollout_part_way)
        snap = kill(run, "rollout part-way")
        assert snap["confirmed"] > 0 and snap["credited"] > 0
        assert snap["messages"] == snap["credited"]  # queued with the credit, never apart

        # 3. Every credit recorded, SMS in flight at the gateway, none of them recorded.
        sim.set_faults(faults(notifier_ms=2000))

        def sms_in_flight():
            sent, calls = db.snapshot()["sent"], sim.calls("notifier")
            return lambda: (
                (s := db.snapshot())["confirmed"] == 0
                and s["queued"] > 0
                and s["sent"] == sent
                and sim.calls("notifier") > calls
            )

        run = reach("SMS in flight at the gateway, none recorded as sent", sms_in_flight)
        snap = kill(run, "SMS in flight, none recorded")
        assert snap["confirmed"] == 0 and snap["queued"] > 0
        wait_until(lambda: gateway_answered() > snap["sent"], "in-flight SMS answered", timeout=10)
        kills["SMS in flight, none recorded"]["answered_unrecorded"] = (
            gateway_answered() - snap["sent"]
        )

        # 4. The SMS sending part-way.
        sim.set_faults(faults())

        def sending_part_way():
            sent = db.snapshot()["sent"]
            return lambda: (s := db.snapshot())["sent"] > sent and s["queued"] > 0

        run = reach("some SMS recorded as sent, some still queued", sending_part_way)
        snap = kill(run, "SMS sending part-way")
        assert 0 < snap["sent"] < snap["messages"]

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

    assert len(kills) >= 4
    assert kills["credits in flight, none recorded"]["applied_unrecorded"] > 0
    assert kills["SMS in flight, none recorded"]["answered_unrecorded"] > 0
    assert lease_waits and max(lease_waits) < LEASE_S, lease_waits
    # Answers lost within a run too (the same keys sent again, replayed): counted only,
    # how many depends on how the kills cut the batches.
    lost_answers = sum(r.stderr().count("card-issuer /v1/credits: HTTP 503") for r in runs)

    final = db.snapshot()
    stats = sim.stats()
    journal = sim.journal()
    credited = {
        nik for (nik,) in db.rows("SELECT nik FROM registrant WHERE wave_id=1 AND state='CREDITED'")
    }
    assert len(credited) == final["credited"] > 0
    assert final["confirmed"] == 0 and final["queued"] == 0

    # Money: credited exactly once, and the ledger is the issuer's statement.
    statement = sim.statement()
    statement_keys = Counter(e["idempotency_key"] for e in statement)
    double_credits = sum(n - 1 for n in statement_keys.values() if n > 1)
    applied_by_nik = Counter(
        line["body"][1]
        for line in journal
        if line["type"] == "credit" and line["result"]["status"] == "APPLIED"
    )
    double_credits += sum(n - 1 for n in applied_by_nik.values() if n > 1)
    assert double_credits == 0
    assert stats["credits_applied"] == len(credited) == len(statement)
    assert set(applied_by_nik) == credited
    ledger = {
        (key, card, amount, transfer)
        for key, card, amount, transfer in db.rows(
            "SELECT idempotency_key, card_number, amount, transfer_id FROM ledger "
            "WHERE wave_id=1 AND status='APPLIED'"
        )
    }
    assert ledger == {
        (e["idempotency_key"], e["card_number"], e["amount"], e["transfer_id"]) for e in statement
    }
    assert db.one("SELECT count(*) FROM ledger WHERE status='PENDING'") == 0

    # SMS: one per credited participant in the outbox, each key accepted once.
    outbox = db.rows("SELECT nik, idempotency_key, status FROM message WHERE wave_id=1")
    per_nik = Counter(nik for nik, _k, _s in outbox)
    double_sms_outbox = sum(n - 1 for n in per_nik.values() if n > 1)
    assert double_sms_outbox == 0 and set(per_nik) == credited
    gateway = [line for line in journal if line["type"] == "message"]
    gateway_keys = Counter(line["key"] for line in gateway)
    accepted_by_nik = Counter(
        line["key"].split(":")[1] for line in gateway if line["result"]["status"] == "ACCEPTED"
    )
    double_sms = sum(n - 1 for n in gateway_keys.values() if n > 1)
    double_sms += sum(n - 1 for n in accepted_by_nik.values() if n > 1)
    assert double_sms == 0
    accepted = {k for _n, k, s in outbox if s == "ACCEPTED"}
    assert stats["messages_accepted"] == len(accepted)
    assert {line["key"] for line in gateway if line["result"]["status"] == "ACCEPTED"} == accepted
    assert set(gateway_keys) == {k for _n, k, _s in outbox}

    # Nothing lost: every registrant has the outcome a single clean run gives.
    got = exported_outcomes(env, tmp_path / "outcomes.csv")
    lost = [line for line in crash_wave.expected if line not in got]
    wrong = {
        line: (got.get(line), want)
        for line, want in crash_wave.expected.items()
        if got.get(line) != want
    }
    assert not lost and not wrong, f"{len(wrong)} differ, e.g. {list(wrong.items())[:5]}"
    assert sum(1 for o, _r in got.values() if o == "CREDITED") == len(credited)

    recon = run_cli(["wave", "reconcile", "--wave", "1", "--json"], env)
    assert recon.returncode == 0, recon.stderr[-3000:]
    doc = json.loads(recon.stdout)
    assert doc["ok"] and doc["ledger_count"] == doc["statement_count"] == len(credited)

    print(
        "\ncrash summary:",
        json.dumps(
            {
                "lottery": LOTTERY,
                "kill_points": {
                    k: {x: (dict(v) if isinstance(v, Counter) else v) for x, v in s.items()}
                    for k, s in kills.items()
                },
                "runs": len(runs),
                "lease_waits_s": [round(w, 1) for w in lease_waits],
                "issuer_answers_lost_and_retried": lost_answers,
                "credited": len(credited),
                "double_credits": double_credits,
                "double_sms": double_sms + double_sms_outbox,
                "lost_rows": len(lost),
                "gateway_resent_keys_deduplicated": stats["messages_duplicate_keys"],
            },
            default=str,
        ),
    )
