"""Past one machine: batch tasks on a real multi-process Dask cluster, program data on
PostgreSQL, partner rate limits held by Prefect global limits; same outcomes as one process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs PRAKERJA_TEST_POSTGRES_URL")


def _outcomes(env: dict, out: Path, wave: int) -> dict[int, tuple[str, str]]:
    subprocess.run(
        [sys.executable, "-m", "cli", "wave", "export", "--wave", str(wave), "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    with open(out, newline="", encoding="utf-8") as fh:
        return {int(r["line"]): (r["outcome"], r["reason"]) for r in csv.DictReader(fh)}


def test_a_wave_on_a_dask_cluster_gets_exactly_the_single_process_outcomes(tmp_path):
    from distributed import LocalCluster

    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorProcess
    from tests.conftest import _fresh_postgres

    export = tmp_path / "wave.csv"
    generate_export(export, registrants=1500, seed="dask", reference_date=date(2026, 11, 28))
    run = [
        "wave",
        "run",
        "--wave",
        "1",
        "--registrants",
        str(export),
        "--quota",
        "60",
        "--lottery-seed",
        "dask-lottery",
        "--reference-date",
        "2026-11-28",
    ]
    with SimulatorProcess("dask") as sim:
        from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text

        partners = tmp_path / "partners.toml"
        partners.write_text(simulator_partners_text(sim.base_url))
        env = dict(os.environ, PRAKERJA_PARTNERS=str(partners), **{SIMULATOR_KEY_ENV: "simulator"})

        single_env = dict(env, PRAKERJA_DATABASE_URL=f"sqlite:///{tmp_path}/single.db")
        single = subprocess.run(
            [sys.executable, "-m", "cli", *run],
            cwd=ROOT,
            env=single_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert single.returncode == 0, single.stderr[-3000:]

        dask_env = dict(env, PRAKERJA_DATABASE_URL=_fresh_postgres())
        os.environ.update(
            {
                k: dask_env[k]
                for k in ("PRAKERJA_PARTNERS", "PRAKERJA_DATABASE_URL", SIMULATOR_KEY_ENV)
            }
        )
        with LocalCluster(
            n_workers=2,
            threads_per_worker=4,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            distributed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    *run,
                    "--task-runner",
                    "dask",
                    "--dask-address",
                    cluster.scheduler_address,
                ],
                cwd=ROOT,
                env=dask_env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert distributed.returncode == 0, distributed.stderr[-3000:]
            ran_on_dask = set(cluster.scheduler.task_prefixes)
        # The partner batches really ran on the cluster's worker processes.
        assert {"verify_identity_task", "screen_task", "credit_task"} <= ran_on_dask

    one = _outcomes(single_env, tmp_path / "single.csv", 1)
    many = _outcomes(dask_env, tmp_path / "dask.csv", 1)
    assert len(one) == 1500
    assert many == one
    assert sum(1 for o, _ in one.values() if o == "CREDITED") > 0
