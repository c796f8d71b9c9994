"""A wave with Prefect result persistence on (`PREFECT_RESULTS_PERSIST_BY_DEFAULT=true`).

Persistence turns on Prefect's default cache policy (inputs + task source + flow run):
a task called twice with the same arguments in one flow run gets the first answer back.
The accounts stage calls `plan-batches`, `accounts-unanswered` and `fill-free-seats` with
the same arguments in every backfill round, and their answers come from the database, so
a cached answer replays the first round for ever (or skips the people it selected). With
`cache_policy=NO_CACHE` on every task that reads the database, the wave must end exactly
as without persistence: the oracle's outcomes, no seat lost.

`prakerja wave run` in a subprocess against the session's Prefect test server, the
simulator over HTTP.
"""

from __future__ import annotations

import csv
import os
import subprocess
from collections import Counter
from datetime import date
from pathlib import Path

from tests.cli_process import run_cli
from tests.e2e.oracle import expected_outcomes, read_truth

ROOT = Path(__file__).resolve().parents[2]
SEED = "persist-seed"
LOTTERY = "persist-lottery"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 400
QUOTA = 40
KEY_ENV = "PRAKERJA_TEST_SIMULATOR_KEY"
RUN_TIMEOUT_S = 120


def _partners_file(path: Path, base_url: str) -> Path:
    builtin = ROOT / "partners" / "default_partners.toml"
    lines = []
    for line in builtin.read_text().splitlines():
        lines.append(line.replace("http://127.0.0.1:8700", base_url))
        if line.startswith("base_url"):
            lines.append(f'api_key_env = "{KEY_ENV}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def _wave_run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`prakerja <args>`; on timeout its whole process group is killed and the test fails."""
    try:
        return run_cli(args, env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or ""
        raise AssertionError(
            f"`prakerja {' '.join(args[:2])}` did not finish in {timeout:.0f} s with result "
            f"persistence on (a backfill round answered from Prefect's cache?): {err[-2000:]}"
        ) from None


def test_a_wave_with_result_persistence_ends_as_without_it(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread

    export, truth_path = tmp_path / "wave.csv", tmp_path / "truth.csv"
    generate_export(
        export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE, truth_path=truth_path
    )
    truth = read_truth(str(truth_path), str(export))
    expected = expected_outcomes(truth, seed=LOTTERY, quota=QUOTA)
    reasons = Counter(reason for _o, reason in expected.values())
    # The draw needs backfill rounds: some seats are freed by failed accounts.
    account_failed = sum(n for r, n in reasons.items() if r.startswith("ACCOUNT_"))
    assert account_failed >= 2 and reasons["QUOTA_FULL"] > 0

    results = tmp_path / "results"
    database = f"sqlite:///{tmp_path}/prakerja.db"
    with SimulatorThread(SEED) as sim:
        env = {
            **os.environ,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_LOCAL_STORAGE_PATH": str(results),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PRAKERJA_DATABASE_URL": database,
            "PRAKERJA_PARTNERS": str(_partners_file(tmp_path / "partners.toml", sim.base_url)),
            KEY_ENV: "simulator",
        }
        env.pop("PRAKERJA_BATCH_SIZE", None)
        ran = _wave_run(
            [
                "wave", "run", "--wave", "1", "--registrants", str(export),
                "--quota", str(QUOTA), "--lottery-seed", LOTTERY,
                "--reference-date", REFERENCE.isoformat(),
            ],
            env,
            RUN_TIMEOUT_S,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-3000:]
        out = tmp_path / "outcomes.csv"
        exported = _wave_run(["wave", "export", "--wave", "1", "--out", str(out)], env, 60)
        assert exported.returncode == 0, exported.stderr[-2000:]

    with open(out, newline="", encoding="utf-8") as fh:
        got = {int(r["line"]): (r["outcome"], r["reason"]) for r in csv.DictReader(fh)}
    wrong = {
        line: (got.get(line), want) for line, want in expected.items() if got.get(line) != want
    }
    assert not wrong, f"{len(wrong)} outcomes differ from the oracle: {list(wrong.items())[:5]}"
    outcomes = Counter(got.values())
    # Every seat freed by a failed account was given again: none lost.
    assert outcomes[("CREDITED", "")] + outcomes[("REJECTED", "CREDIT_REJECTED")] == QUOTA

    # Persistence was on (results were written), and what it stored names nobody.
    stored = [p for p in results.rglob("*") if p.is_file()]
    assert stored, "no result was persisted: the setting did not reach the run"
    niks = {r["nik"] for r in truth}
    blob = b"".join(p.read_bytes() for p in stored)
    assert not [n for n in niks if n.encode() in blob]


def test_no_task_of_the_program_is_answered_from_a_cache():
    """Every task reads or writes the program database: none may be served from Prefect's
    cache when persistence is on (a new task must say cache_policy=NO_CACHE too)."""
    import importlib

    from prefect import Task
    from prefect.cache_policies import NO_CACHE

    found = {}
    for name in ("tasks.batches", "tasks.operations", "flows.operations", "flows.wave"):
        module = importlib.import_module(name)
        found |= {t.name: t for t in vars(module).values() if isinstance(t, Task)}
    assert {"fill-free-seats", "accounts-unanswered", "plan-batches", "draw-facts"} <= set(found)
    cached = sorted(n for n, t in found.items() if t.cache_policy is not NO_CACHE)
    assert not cached, f"tasks that a persisted result could answer: {cached}"
