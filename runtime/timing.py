"""Where a wave's time goes: seconds spent in SQL, in partner calls, and waiting for a
partner's rate limit, summed over the run's process and its worker processes.

Counted always (a clock read around each statement and each partner request: nothing
beside the work), read by the benchmark per stage (bench/wave_scale.py), so that the next
regression names itself: more SQL, more waiting on partners, or more CPU. The counters
live in shared memory made once by the run's process; the worker pool hands them to each
worker (runtime/workers.py), whose statements and calls add to the same totals. They are
thread-seconds: eight threads in SQL for a second count eight.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

KINDS = ("sql_s", "partner_s", "partner_wait_s")
SQL, PARTNER, PARTNER_WAIT = range(len(KINDS))

_context = multiprocessing.get_context("spawn")
_values: Any = _context.RawArray("d", len(KINDS))
_lock: Any = _context.Lock()
_instrumented: set[int] = set()


def add(kind: int, seconds: float) -> None:
    with _lock:
        _values[kind] += seconds


def shared() -> tuple[Any, Any]:
    """What a worker process needs to add to this process's totals (passed at its start)."""
    return _values, _lock


def use(counters: tuple[Any, Any]) -> None:
    """In a worker process: add to the run's process's totals from now on."""
    global _values, _lock
    _values, _lock = counters


def _before(conn, cursor, statement, parameters, context, executemany) -> None:
    conn.info.setdefault("prakerja_sql_started", []).append(time.perf_counter())


def _after(conn, cursor, statement, parameters, context, executemany) -> None:
    started = conn.info.get("prakerja_sql_started")
    if started:
        add(SQL, time.perf_counter() - started.pop())


def instrument(engine: Engine) -> None:
    """Counts the time of every statement `engine` sends (once per engine)."""
    if id(engine) in _instrumented:
        return
    _instrumented.add(id(engine))
    event.listen(engine, "before_cursor_execute", _before)
    event.listen(engine, "after_cursor_execute", _after)


def partner_call(seconds: float, waited: float) -> None:
    """A partner request's time on the wire, and the time it first waited for its rate
    limit (partners/client.py reports both through the callback build_app gives it)."""
    with _lock:
        _values[PARTNER] += seconds
        _values[PARTNER_WAIT] += waited


def cpu_seconds(pids: list[int] | None = None) -> float:
    """CPU time of this process (every thread) and of `pids` (the worker pool's)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids or []:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def totals(pids: list[int] | None = None) -> dict[str, float]:
    """The run's totals so far: SQL, partner and rate-limit seconds, and CPU seconds."""
    with _lock:
        got = {kind: float(_values[i]) for i, kind in enumerate(KINDS)}
    got["cpu_s"] = cpu_seconds(pids)
    return got
