"""One progress line per stage of a wave run, on standard error (`wave run`, `demo`).

Listens to `runtime.progress` (stage started, batches planned, batch done, stage finished)
in the process that runs the wave flow. On a terminal: a live `rich` progress display,
one line per stage with its batches done of planned, the registrants handled, records
per second and the time left (or taken). Elsewhere (a pipe, a log file, CI) or with
`-v`: one plain line per stage when it ends. Counts only: nothing personal passes here.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn
from rich.text import Text

from runtime.progress import StageEvent, listen

# Stages whose work is not paged into batches: their records come from their counts.
_RECORDS_KEY = {"intake": "rows", "draw": "pool_size"}
_LABEL = {"close": "close, report"}


@dataclass
class _Line:
    stage: str
    started: float
    planned: int = 0
    done: int = 0
    records: int = 0
    finished: bool = False
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    task_id: TaskID | None = None

    @property
    def label(self) -> str:
        return _LABEL.get(self.stage, self.stage)

    def elapsed(self) -> float:
        return self.seconds if self.finished else time.monotonic() - self.started


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}:{s:02d}"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def rate_text(line: _Line) -> str:
    elapsed = line.elapsed()
    if not line.records or elapsed <= 0:
        return ""
    return f"{line.records / elapsed:,.0f}/s"


def time_text(line: _Line) -> str:
    if line.finished:
        return f"done in {line.seconds:.1f} s"
    elapsed = line.elapsed()
    if line.planned and line.done >= line.planned:  # batches done; the stage sums them up
        return f"{_duration(elapsed)}, finishing"
    if line.planned and line.done:
        left = elapsed / line.done * (line.planned - line.done)
        return f"ETA {_duration(left)}"
    return f"{_duration(elapsed)} so far"


def summary_line(wave_id: int, line: _Line) -> str:
    """The plain line of a finished stage: batches, records, time, rate, its counts."""
    if line.stage == "close":
        return f"wave {wave_id} {line.label}: done in {line.seconds:.1f} s"
    parts = []
    if line.planned:
        parts.append(f"{line.done:,}/{line.planned:,} batches")
    if line.records:
        parts.append(f"{line.records:,} records")
    head = ", ".join(parts) or "nothing to do"
    rate = rate_text(line)
    text = f"wave {wave_id} {line.label}: {head} in {line.seconds:.1f} s"
    if rate:
        text += f" ({rate})"
    counts = counts_text(line.stage, line.counts)
    if counts:
        text += "; " + counts
    return text


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)


def _words(code: str) -> str:
    """`EMAIL_UNVERIFIED` -> `email unverified`."""
    return code.lower().replace("_", " ")


def counts_text(stage: str, counts: dict[str, int]) -> str:
    """What a finished stage did, from its counts. Intake, the draw and accounts say it in
    words that add up to the funnel's rows (registered = in + rejected at intake; selected
    = drawn + backfilled); the other stages list their counts (results and reasons)."""
    if stage == "intake":
        return _intake_text(counts)
    if stage == "draw":
        return _draw_text(counts)
    if stage == "accounts":
        return _accounts_text(counts)
    if stage == "rollout":
        return _rollout_text(counts)
    return _listed(counts)


_INTAKE_RUN = ("rows", "inserted", "skipped")


def _intake_text(counts: dict[str, int]) -> str:
    """`100,000 rows: 73,958 in, 26,042 rejected (email unverified 26,042)`; the rejected
    are the wave's rows refused at intake, by reason (tasks/batches.import_export_task)."""
    rows = counts.get("rows", 0)
    rejected = {k: v for k, v in counts.items() if k not in _INTAKE_RUN and v}
    refused = sum(rejected.values())
    text = f"{rows:,} rows: {rows - refused:,} in, "
    if refused:
        by_count = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))
        reasons = ", ".join(f"{_words(k)} {v:,}" for k, v in by_count)
        text += f"{refused:,} rejected ({reasons})"
    else:
        text += "none rejected"
    if counts.get("skipped"):
        text += f"; {counts['skipped']:,} already loaded by an earlier run"
    return text


def _draw_text(counts: dict[str, int]) -> str:
    """`drew 3,353 of quota 3,353 from 16,000 eligible; 12,600 waitlisted`."""
    if "held_by_pending" in counts:
        return f"not drawn yet: {counts['held_by_pending']:,} registrants still pending before it"
    if "selected" not in counts:  # drawn by an earlier run
        late = counts.get("late_waitlisted", 0)
        return "drawn by an earlier run" + (f"; {late:,} more waitlisted" if late else "")
    text = f"drew {counts['selected']:,}"
    if "quota" in counts:
        text += f" of quota {counts['quota']:,}"
    text += f" from {counts.get('pool_size', 0):,} eligible"
    more = []
    if counts.get("household_cap"):
        more.append(f"{counts['household_cap']:,} passed over (household cap)")
    more.append(f"{counts.get('waitlisted', 0):,} waitlisted")
    if counts.get("without_pending"):
        more.append(f"drawn while {counts['without_pending']:,} were still pending")
    return text + "; " + ", ".join(more)


def _rollout_text(counts: dict[str, int]) -> str:
    """The credits; refused ones said in words (the run log's warning about them reaches
    the terminal only with -v: runtime/log_masking.py)."""
    refused = counts.get("CREDIT_REJECTED", 0)
    text = _listed({k: v for k, v in counts.items() if k != "CREDIT_REJECTED"})
    if refused:
        said = (
            f"the card issuer refused {refused:,} credit{'s' if refused != 1 else ''} "
            "(CREDIT_REJECTED: a person must look at them)"
        )
        text = f"{text}; {said}" if text else said
    return text


_BACKFILL = ("backfilled", "backfill_household_cap")


def _accounts_text(counts: dict[str, int]) -> str:
    """The accounts' answers, then `backfilled 505 freed seats from the waitlist`: the
    funnel's selected are the drawn plus the backfilled."""
    text = _listed({k: v for k, v in counts.items() if k not in _BACKFILL})
    backfilled = counts.get("backfilled", 0)
    if backfilled:
        fill = f"backfilled {backfilled:,} freed seats from the waitlist"
        if counts.get("backfill_household_cap"):
            fill += f" ({counts['backfill_household_cap']:,} passed over: household cap)"
        text = f"{text}; {fill}" if text else fill
    return text


class _Field(ProgressColumn):
    """A column computed from the stage's line at each refresh (rate and ETA move)."""

    def __init__(self, view: StageLines, render, width: int) -> None:
        super().__init__()
        self._view, self._render, self._width = view, render, width

    def render(self, task) -> Text:
        line = self._view.line_of(task.id)
        text = self._render(line) if line is not None else ""
        return Text(text.rjust(self._width) if text else " " * self._width)


class StageLines:
    """Context manager: subscribes to the wave's progress and draws it until exit."""

    def __init__(self, wave_id: int, *, live: bool | None = None, console: Console | None = None):
        self.wave_id = wave_id
        self.console = console or Console(file=sys.stderr, highlight=False, markup=False)
        if live is None:
            live = self.console.is_terminal and not self.console.is_dumb_terminal
        self.live = live
        self.lines: dict[str, _Line] = {}
        self._current: str | None = None
        self._by_task: dict[TaskID, _Line] = {}
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._stack = contextlib.ExitStack()
        self._streams: list[tuple[logging.StreamHandler, object]] = []

    # ------------------------------------------------------------------ context
    def __enter__(self) -> StageLines:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description:<17}"),
                BarColumn(bar_width=24),
                _Field(
                    self, lambda ln: f"{ln.done:,}/{ln.planned:,} batches" if ln.planned else "", 16
                ),
                _Field(self, lambda ln: f"{ln.records:,} records" if ln.records else "", 18),
                _Field(self, rate_text, 10),
                _Field(self, time_text, 16),
                console=self.console,
                refresh_per_second=4,
            )
            self._progress.start()
            self._route_logging_through_display(self._progress)
        self._stack.enter_context(listen(self))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        if self._progress is not None:
            self._progress.stop()
            for handler, stream in self._streams:
                handler.setStream(stream)

    def _route_logging_through_display(self, progress: Progress) -> None:
        """Warnings logged while the display is live (a partner failing) print above it,
        not through it: the logging handlers write to the display's stderr proxy."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.__stderr__,
                getattr(progress.live, "_restore_stderr", None),
            ):
                self._streams.append((handler, handler.stream))
                handler.setStream(sys.stderr)

    # ------------------------------------------------------------------ events
    def line_of(self, task_id: TaskID) -> _Line | None:
        return self._by_task.get(task_id)

    def _line(self, stage: str) -> _Line:
        line = self.lines.get(stage)
        if line is None:
            line = self.lines[stage] = _Line(stage, time.monotonic())
            if self._progress is not None:
                line.task_id = self._progress.add_task(line.label, total=None)
                self._by_task[line.task_id] = line
        return line

    def __call__(self, event: StageEvent) -> None:
        if event.wave_id != self.wave_id:
            return
        with self._lock:
            if event.kind == "started":
                line = self._line(event.stage)
                if line.finished:  # the stage again in the same run: it goes on
                    line.finished, line.started = False, time.monotonic() - line.seconds
                self._current = event.stage
            elif event.kind in ("planned", "batch"):
                # Batches of a stage run inside another (the rollout's refill of
                # accounts) count toward the stage the wave is in.
                line = self._line(self._current or event.stage)
                if event.kind == "planned":
                    line.planned += event.batches
                else:
                    line.done += 1
                    line.records += event.records
            elif event.kind == "records":
                line = self._line(self._current or event.stage)
                line.records = max(line.records, event.records)
            elif event.kind == "finished":
                line = self._line(event.stage)
                line.finished, line.seconds, line.counts = True, event.seconds, event.counts
                if not line.planned and event.stage in _RECORDS_KEY:
                    line.records = event.counts.get(_RECORDS_KEY[event.stage], 0)
                if self._current == event.stage:
                    self._current = None
            else:
                return
            self._draw(line)

    def _draw(self, line: _Line) -> None:
        if self._progress is None:
            if line.finished:
                print(summary_line(self.wave_id, line), file=sys.stderr, flush=True)
            return
        if line.task_id is None:
            return
        if line.finished:
            total = line.planned or 1
            self._progress.update(line.task_id, total=total, completed=total)
        else:
            self._progress.update(line.task_id, total=line.planned or None, completed=line.done)
