"""Where a stage's batch tasks run: threads in this process, or a Dask cluster.

Chosen by the environment when the flows are imported (`wave run --task-runner dask
--dask-address tcp://host:8786` sets it), so deployments and the CLI agree.
"""

from __future__ import annotations

import os

from prefect.task_runners import ThreadPoolTaskRunner

RUNNER_ENV = "PRAKERJA_TASK_RUNNER"
DASK_ADDRESS_ENV = "PRAKERJA_DASK_ADDRESS"


def batch_task_runner(threads: int):
    if os.environ.get(RUNNER_ENV, "threads") == "dask":
        from prefect_dask import DaskTaskRunner

        address = os.environ.get(DASK_ADDRESS_ENV)
        if not address:
            raise RuntimeError(f"{DASK_ADDRESS_ENV} must name the Dask scheduler")
        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=threads)
