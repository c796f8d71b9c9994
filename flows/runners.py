"""Where a stage's batch tasks run: threads in the run's process, or a Dask cluster.

Chosen by the run's `Execution` (runtime/execution.py), which the wave flow takes as a
parameter: the CLI builds it from its flags, a deployment's run from its environment.
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from runtime.execution import Execution


def batch_task_runner(execution: Execution, threads: int) -> TaskRunner:
    if execution.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=execution.dask_address)
    return ThreadPoolTaskRunner(max_workers=threads)


def partner_threads(execution: Execution) -> int:
    """Batch tasks at once in a partner stage: enough to keep every worker process busy."""
    return max(3, execution.workers())


def worker_stage_threads(execution: Execution) -> int:
    """Batch tasks at once in a stage whose batches run in worker processes: twice as many
    as workers, so that each worker has a batch queued behind the one it runs while Prefect
    starts and finishes task runs (a round trip to the API each, slow on a busy machine)."""
    return max(partner_threads(execution), 2 * execution.workers())
