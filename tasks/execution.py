"""How a wave run executes its batches: one value that travels with the run.

The execution mode used to be chosen by environment variables that the CLI set on its own
process, read when the flows were imported: a Dask worker started elsewhere (as the README
documents) never saw them, took itself for a lone process and tried to start the worker
pool inside a daemonic Dask process. Now the run's entry point (the CLI's flags, or a
deployment's environment read once when its run starts) builds one `Execution`, the wave
flow takes it as a parameter, and every batch task gets from it what it needs to know:
how many worker processes to use (none on Dask) and which shared partner limits to take.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.config import Settings, read_settings

MAX_DEFAULT_WORKERS = 6

TaskRunnerName = Literal["threads", "dask"]
PartnerLimits = Literal["database", "prefect", "process"]


class Execution(BaseModel):
    """Where a run's batches run and how its partner calls share limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_runner: TaskRunnerName = Field(
        "threads", description="batch tasks on threads in the run's process, or on Dask"
    )
    dask_address: str | None = Field(None, description="the Dask scheduler, tcp://host:8786")
    worker_processes: int | None = Field(
        None,
        ge=0,
        description="worker processes for identity and screening batches (None: three per "
        "core, at most 6; 0 or 1: in the run's own process); never used on Dask",
    )
    partner_limits: PartnerLimits = Field(
        "database",
        description="what every partner request also takes a token from: a bucket in the "
        "program database, Prefect global rate limits, or nothing beyond the process",
    )

    @model_validator(mode="after")
    def _dask_needs_address(self) -> Execution:
        if self.task_runner == "dask" and not self.dask_address:
            raise ValueError("dask_address: required with task_runner 'dask'")
        return self

    def workers(self) -> int:
        """Worker processes a stage's batches get; 0 means the calling process does them.

        On Dask the Dask workers are the processes; with Prefect's global rate limits the
        limits are held by the server, not by a pool's shared memory.
        """
        if self.task_runner == "dask" or self.partner_limits == "prefect":
            return 0
        count = self.worker_processes
        if count is None:
            # Three per core: a worker runs one batch at a time and spends much of it
            # waiting for partners (screening asks each agency in turn), so the others keep
            # the core busy meanwhile. On 2 cores, 6 screened a million 10% faster than 4.
            count = min(3 * (os.cpu_count() or 1), MAX_DEFAULT_WORKERS)
        return 0 if count <= 1 else count

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> Execution:
        """The execution the process's settings (models/config.py: PRAKERJA_TASK_RUNNER,
        _DASK_ADDRESS, _WORKER_PROCESSES, _PARTNER_LIMITS, _SHARED_RATE_LIMITS) ask for,
        with `overrides` (the CLI's flags) over them."""
        values: dict = {
            "task_runner": settings.task_runner,
            "dask_address": settings.dask_address,
            "worker_processes": settings.worker_processes,
            "partner_limits": "prefect" if settings.shared_rate_limits else settings.partner_limits,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Execution:
        """The execution of a process's environment (default: this one's), read now."""
        return cls.from_settings(read_settings(env), **overrides)
