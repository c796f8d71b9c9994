"""Worker processes for the CPU-heavy partner stages, so that a wave uses every core.

One Python process runs out of its one core (the GIL) long before the partners run out
of rate: building, parsing and storing millions of partner answers is Python work. So
the identity and screening batch tasks hand their batch function to a small pool of
worker processes; the Prefect task (its state, retries, events) stays in the flow's
process, and only ids, counts and failure summaries cross the process boundary.

Each worker opens its own database engine and partner clients; their calls to each
partner share one token bucket and one concurrency semaphore (partners.limits), so
that together they keep within the partner's `max_rps` and `max_concurrency`, as one
process would; and when one worker's calls open a partner's circuit breaker, all stop
calling it. (Every request of every process also takes a token of the partner's bucket
in the database, shared with the program's other processes: partners/shared_limits.py.)

How many workers a batch gets is the run's own (runtime/execution.py `Execution.workers()`,
carried by each batch task): by default three per core, at most 6; 0 or 1 runs batches
in the calling process. With a Dask task runner or Prefect's global rate limits it is
always 0: there the Dask workers are the processes (daemonic ones, which may not start a
pool), and the limits are held by the Prefect server.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from models.config import Execution, Settings
from partners.config import PartnersConfig
from partners.limits import SharedCircuitBreaker, SharedLimits, SharedRateLimiter
from runtime import app as runtime
from runtime import timing

_pool: ProcessPoolExecutor | None = None
_pool_key: tuple | None = None
_lock = threading.Lock()


def partner_limits(config: PartnersConfig, context) -> dict[str, SharedLimits]:
    """One rate limiter, concurrency semaphore and circuit breaker per partner, for all
    workers."""
    return {
        p.id: (
            SharedRateLimiter(
                p.max_rps,
                burst=max(1.0, min(float(p.max_concurrency), p.max_rps)),
                context=context,
            ),
            context.BoundedSemaphore(p.max_concurrency),
            SharedCircuitBreaker(p.breaker_threshold, p.breaker_cooldown_s, context=context),
        )
        for p in config.every()
    }


def _start_worker(
    parent: int,
    settings: dict,
    database: str,
    config: PartnersConfig,
    limits: dict[str, SharedLimits],
    execution: Execution,
    counters: tuple,
) -> None:
    """A worker's start: its app, built from what the parent passed (its pid, its
    settings' plain values, database, partners, the pool's shared limits, the run's
    execution); it reads no environment."""
    _exit_with_parent(parent)
    _log_masked_to_stderr()
    timing.use(counters)  # its statements and calls count in the run's totals
    runtime.install(
        runtime.build_app(
            Settings.model_validate(settings),
            database=database,
            partners_config=config,
            execution=execution,
            shared_limits=limits,
        )
    )


def _log_masked_to_stderr() -> None:
    """A worker's own warnings (a partner's retries, say) go to stderr formatted and masked
    like the run's, instead of through Python's bare fallback handler, unmasked."""
    import logging
    import sys

    from runtime.log_masking import MaskingFilter, install_masking

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s")
    )
    handler.addFilter(MaskingFilter())
    logging.getLogger().addHandler(handler)
    install_masking()


def _exit_with_parent(parent: int) -> None:
    """Ends this worker at once when the flow's process dies (kill -9 included), so that
    no orphan goes on writing while a rerun, which holds the wave's lease, does the same
    batch again. An unfinished batch transaction is rolled back by the database.

    `parent` is the pool's process id as that process saw it: one read here would already
    be init's (or a subreaper's) if the parent died while this worker was starting, and
    the worker would wait for that one instead, for ever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.1)
        os._exit(70)

    if os.getppid() != parent:
        os._exit(70)  # gone before this worker got here
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _call(job: Callable[..., Any], args: tuple) -> Any:
    return job(runtime.current(), *args)


def _get_pool(workers: int, app: runtime.App | None = None) -> ProcessPoolExecutor:
    global _pool, _pool_key
    rt = app or runtime.current()
    config = rt.partners_config
    database = rt.engine.url.render_as_string(hide_password=False)
    key = (database, config, workers, rt.partner_limits)
    with _lock:
        if _pool is not None and _pool_key == key:
            return _pool
        if _pool is not None:
            _pool.shutdown(wait=True)
        # spawn: the flow's process has threads (Prefect's), which fork would not carry.
        context = multiprocessing.get_context("spawn")
        _pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(
                os.getpid(),
                rt.settings.handover(),
                database,
                config,
                partner_limits(config, context),
                rt.execution.model_copy(update={"task_runner": "threads", "dask_address": None}),
                timing.shared(),
            ),
        )
        _pool_key = key
        return _pool


def run(job: Callable[..., Any], *args: Any, workers: int, app: runtime.App | None = None) -> Any:
    """job(app, *args) in one of `workers` worker processes (here, with 0); its result.
    `app`: the run's (default: this process's); the workers are built like it.

    `job` must be a module-level function and its arguments and result picklable: ids
    and counts, never people.
    """
    if workers <= 1:
        return run_here(job, *args, app=app)
    pool = _get_pool(workers, app)
    try:
        return pool.submit(_call, job, args).result()
    except BrokenProcessPool:
        # A worker died (killed, out of memory): the batch is left as it was (one
        # transaction), the next batch gets a fresh pool, and this task fails visibly.
        shutdown()
        raise


def _ready() -> int:
    return os.getpid()


def warm_up(workers: int) -> None:
    """Starts the worker processes now, without waiting for them: the wave calls this
    before intake, so that the workers have started (imports, database, partner clients)
    by the time the first identity batch comes, instead of holding it up for seconds."""
    if workers <= 1:
        return
    pool = _get_pool(workers)
    for _ in range(workers):
        pool.submit(_ready)


def run_here(job: Callable[..., Any], *args: Any, app: runtime.App | None = None) -> Any:
    """job(app, *args) in this process: for a stage of one batch, where starting
    worker processes would cost more than they save."""
    return job(app or runtime.current(), *args)


def worker_pids() -> list[int]:
    """The pids of the live worker processes (none without a pool)."""
    with _lock:
        pool = _pool
    return list(getattr(pool, "_processes", None) or {}) if pool is not None else []


def peak_rss_mb() -> int | None:
    """The largest peak resident memory (VmHWM) of the live worker processes, in MB."""
    with _lock:
        pool = _pool
    pids = list(getattr(pool, "_processes", None) or {}) if pool is not None else []
    peaks = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) // 1024)
        except OSError:
            continue
    return max(peaks) if peaks else None


def shutdown() -> None:
    global _pool, _pool_key
    with _lock:
        pool, _pool, _pool_key = _pool, None, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
runtime.on_replace(shutdown)  # its processes hold engines of the runtime being replaced
