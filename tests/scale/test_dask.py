"""Past one machine, as the README documents it: a `dask scheduler` and two `dask worker`
processes started on their own (not by the CLI, and with only the variables the README
lists), a real Prefect server, the program data on PostgreSQL, and `wave run --task-runner
dask --dask-address ...`: the same outcomes as one process.

The wave has several batches per stage, so that the batches run on the cluster's worker
processes the way a big wave's do: those are daemonic (Dask's nannies), and may not start
the worker pool a lone run uses. Nothing of the CLI's own environment reaches them: what
the run needs travels with it (runtime/execution.py)."""

from __future__ import annotations

import csv
import os
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.cli_process import run_cli
from tests.conftest import POSTGRES_URL
from tests.ops.conftest import free_port, prefect_api, start, stop, wait_until  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs PRAKERJA_TEST_POSTGRES_URL")
REGISTRANTS = 3000


def _outcomes(env: dict, out: Path, wave: int) -> dict[int, tuple[str, str]]:
    run_cli(["wave", "export", "--wave", str(wave), "--out", str(out)], env).check_returncode()
    with open(out, newline="", encoding="utf-8") as fh:
        return {int(r["line"]): (r["outcome"], r["reason"]) for r in csv.DictReader(fh)}


def _ran_on_cluster(address: str) -> set[str]:
    from distributed import Client

    with Client(address, timeout=30) as client:
        return set(
            client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
        )


def test_a_wave_on_a_separately_started_dask_cluster_gets_the_single_process_outcomes(
    tmp_path,
    prefect_api,  # noqa: F811 - the fixture imported above
):
    from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorProcess
    from tests.conftest import _fresh_postgres

    export = tmp_path / "wave.csv"
    generate_export(export, registrants=REGISTRANTS, seed="dask", reference_date=date(2026, 11, 28))
    run = [
        *("wave", "run", "--wave", "1", "--registrants", str(export), "--quota", "120"),
        *("--lottery-seed", "dask-lottery", "--reference-date", "2026-11-28"),
    ]
    with SimulatorProcess("dask") as sim:
        partners = tmp_path / "partners.toml"
        partners.write_text(simulator_partners_text(sim.base_url))
        # Batches of 500: six per partner stage, so that they run side by side.
        env = dict(
            os.environ,
            PRAKERJA_PARTNERS=str(partners),
            PRAKERJA_BATCH_SIZE="500",
            **{SIMULATOR_KEY_ENV: "simulator"},
        )
        single_env = dict(env, PRAKERJA_DATABASE_URL=f"sqlite:///{tmp_path}/single.db")
        single = run_cli(run, single_env, timeout=600)
        assert single.returncode == 0, single.stderr[-3000:]

        database = _fresh_postgres()
        # What the README says a Dask worker needs, and nothing else: not one variable of
        # the CLI's environment (no PRAKERJA_WORKER_PROCESSES, no task runner).
        worker_env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),  # "the project installed"
            "PRAKERJA_DATABASE_URL": database,
            "PRAKERJA_PARTNERS": str(partners),
            SIMULATOR_KEY_ENV: "simulator",
            "PREFECT_API_URL": prefect_api.api_url,
            "PREFECT_HOME": str(tmp_path / "worker-prefect"),
        }
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        cluster = [
            start(
                [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
                + ["--no-dashboard"],
                worker_env,
                tmp_path / "scheduler.log",
            )
        ]
        try:
            cluster += [
                start(
                    [str(BIN / "dask"), "worker", address, "--nthreads", "4"]
                    + ["--no-dashboard", "--name", f"w{i}"],
                    worker_env,
                    tmp_path / f"worker-{i}.log",
                )
                for i in range(2)
            ]

            def two_workers() -> bool:
                from distributed import Client

                try:
                    with Client(address, timeout=5) as client:
                        return len(client.scheduler_info()["workers"]) == 2
                except OSError:
                    return False

            wait_until(two_workers, 120, "the Dask scheduler and its two workers", every=1)
            dask_env = dict(
                env, PRAKERJA_DATABASE_URL=database, PREFECT_API_URL=prefect_api.api_url
            )
            distributed = run_cli(
                [*run, "--task-runner", "dask", "--dask-address", address], dask_env, timeout=600
            )
            logs = "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("worker-*.log")))
            assert distributed.returncode == 0, distributed.stderr[-3000:] + logs
            assert "daemonic" not in logs
            ran = _ran_on_cluster(address)
        finally:
            for proc in reversed(cluster):
                stop(proc)
        # The partner batches really ran on the cluster's worker processes.
        assert {"verify_identity_task", "screen_task", "credit_task"} <= ran, ran

    one = _outcomes(single_env, tmp_path / "single.csv", 1)
    many = _outcomes(dict(env, PRAKERJA_DATABASE_URL=database), tmp_path / "dask.csv", 1)
    assert len(one) == REGISTRANTS
    assert many == one
    assert sum(1 for o, _ in one.values() if o == "CREDITED") > 0
