"""Stage progress for whoever runs the wave flow in this process (the `prakerja` CLI).

The flow reports here as stages start and end and as their batch futures complete
(intake, one task in the flow's process, reports its rows as it inserts them); the CLI
listens and draws one progress line per stage. Only stage names and counts pass
through, never a person. The counts are totalled in the flow's process (batches running
in worker processes or on Dask report through their futures), so a listener sees every
batch. With no listener, reporting costs nothing; a listener that fails never fails the
wave (it is dropped and logged).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger("prakerja")


@dataclass(frozen=True)
class StageEvent:
    """`kind`: `started`, `planned` (`batches` more batches submitted), `batch`
    (one batch done, `records` registrants or messages it handled), `finished`
    (`counts`: the stage's merged counts, `seconds`)."""

    kind: str  # also `records`: `records` handled so far by a stage without batches
    wave_id: int
    stage: str
    batches: int = 0
    records: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


_listeners: list[Callable[[StageEvent], None]] = []
_lock = threading.Lock()


@contextlib.contextmanager
def listen(callback: Callable[[StageEvent], None]) -> Iterator[None]:
    with _lock:
        _listeners.append(callback)
    try:
        yield
    finally:
        with _lock:
            if callback in _listeners:
                _listeners.remove(callback)


def _emit(event: StageEvent) -> None:
    for callback in list(_listeners):
        try:
            callback(event)
        except Exception:  # noqa: BLE001 - a display never fails a wave
            log.warning("progress display failed; it stops here", exc_info=True)
            with _lock, contextlib.suppress(ValueError):
                _listeners.remove(callback)


def active() -> bool:
    """Whether anyone listens (the flow reads a batch's result for its count only then)."""
    return bool(_listeners)


def records_of(report: dict) -> int:
    """Registrants (or messages) a batch's report accounts for: its counts add up to them
    (every one gets exactly one result: passed, a reason, or pending)."""
    counts = report.get("counts", report)
    return sum(v for v in counts.values() if isinstance(v, int) and not isinstance(v, bool))


def stage_started(wave_id: int, stage: str) -> None:
    if _listeners:
        _emit(StageEvent("started", wave_id, stage))


def batches_planned(wave_id: int, stage: str, batches: int) -> None:
    if _listeners:
        _emit(StageEvent("planned", wave_id, stage, batches=batches))


def batch_done(wave_id: int, stage: str, report: dict | None) -> None:
    if _listeners:
        records = records_of(report) if isinstance(report, dict) else 0
        _emit(StageEvent("batch", wave_id, stage, records=records))


def stage_finished(wave_id: int, stage: str, summary: dict, seconds: float) -> None:
    if _listeners:
        counts = summary.get("counts", {}) if isinstance(summary, dict) else {}
        clean = {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
        _emit(StageEvent("finished", wave_id, stage, counts=clean, seconds=seconds))


def records_so_far(wave_id: int, stage: str, records: int) -> None:
    if _listeners:
        _emit(StageEvent("records", wave_id, stage, records=records))
