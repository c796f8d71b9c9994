"""How a wave run executes its batches: one value that travels with the run.

`Execution` is declared with the settings (models/config.py: its fields are settings,
PRAKERJA_TASK_RUNNER and the rest, declared once): the run's entry point builds it once
from the process's settings and its own choices (`settings.execution(**flags)`), the wave
flow takes it as a parameter, and every batch task carries it, so that a Dask worker
started elsewhere does what the run asked: how many worker processes to use (none on
Dask) and which shared partner limits to take.
"""

from __future__ import annotations

from models.config import MAX_DEFAULT_WORKERS, Execution, PartnerLimits, TaskRunnerName

__all__ = ["MAX_DEFAULT_WORKERS", "Execution", "PartnerLimits", "TaskRunnerName"]
