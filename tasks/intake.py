"""Intake: stream a registrant export into the wave, then settle duplicates and email checks."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, update

from models.bulk import insert_rows
from models.db import SessionFactory
from models.enums import ReasonCode, State
from models.tables import Registrant
from rules.draw import province_of
from rules.intake import IntakeRecord, read_export
from tasks.common import R, load_wave, utcnow

PARSE_PROCESS_FROM_BYTES = 20_000_000  # about 100,000 rows


def is_big_export(path: str | Path | None) -> bool:
    """An export of about 100,000 rows or more: parsed in a process of its own, and big
    enough for its partner stages to use the worker processes (runtime.workers)."""
    try:
        return path is not None and Path(path).stat().st_size >= PARSE_PROCESS_FROM_BYTES
    except OSError:
        return False  # intake names the problem when it opens the file


CHUNK_ROWS = 20_000  # rows per transaction: fewer, bigger commits


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_header(path: str | Path) -> list[str]:
    """Reads only the header: a refused header raises before anything is written."""
    with open(path, "rb") as fh:
        header, _records = read_export(fh)
    return header


INTAKE_COLUMNS = (
    "wave_id",
    "line",
    "registration_id",
    "nik",
    "kk_number",
    "full_name",
    "birth_date",
    "gender",
    "email",
    "email_verified",
    "phone",
    "domicile_regency_code",
    "province",
    "test_score",
    "payout_provider",
    "payout_account",
    "registered_at",
    "raw",
    "state",
    "reason",
    "decided_at",
    "priority",
)
_REJECTED = State.REJECTED.value
_ACCEPTED = State.AWAIT_LOCAL.value
# state, reason, decided_at of a row that passed checks 1-4. EMAIL_UNVERIFIED (check 6) is
# known from the row alone, so it is written with the row: settling intake then rewrites
# only the duplicates, which are few, instead of every unverified row (a quarter of them).
# A later duplicate among those still becomes DUPLICATE_NIK (check 5 comes first).
_ACCEPTED_AS = (_ACCEPTED, None, None)
_UNVERIFIED = ReasonCode.EMAIL_UNVERIFIED.value


def _stamp(value: datetime) -> str:
    # The text SQLAlchemy stores naive datetimes as on SQLite; PostgreSQL parses it too.
    return value.isoformat(sep=" ", timespec="microseconds")


def _record_values(wave_id: int, rec: IntakeRecord, now: str) -> tuple:
    """One registrant row in INTAKE_COLUMNS order, with driver-ready values."""
    row = rec.row
    if rec.reason is not None or row is None:
        reason = (rec.reason or ReasonCode.MALFORMED_ROW).value
        return (wave_id, rec.line, rec.registration_id, rec.nik, *_NO_FIELDS_BEFORE_PHONE,
                rec.phone, *_NO_FIELDS_AFTER_PHONE, rec.raw, _REJECTED, reason, now,
                False)  # fmt: skip
    return (
        wave_id, rec.line, row.registration_id, row.nik, row.kk_number, row.full_name,
        row.birth_date.isoformat(), row.gender, row.email, row.email_verified, row.phone,
        row.domicile_regency_code, province_of(row.domicile_regency_code), row.test_score,
        row.payout_provider, row.payout_account,
        _stamp(row.registered_at.astimezone(UTC).replace(tzinfo=None)),
        None, *(_ACCEPTED_AS if row.email_verified else (_REJECTED, _UNVERIFIED, now)), False,
    )  # fmt: skip


# The parsed columns a row rejected by checks 1-4 leaves empty: all but its phone (kept,
# as given, so that the dashboard can send that person a sign-in code).
_NO_FIELDS_BEFORE_PHONE = (None,) * (INTAKE_COLUMNS.index("phone") - 4)
_NO_FIELDS_AFTER_PHONE = (None,) * (INTAKE_COLUMNS.index("raw") - INTAKE_COLUMNS.index("phone") - 1)


@dataclass
class IntakeResult:
    rows: int
    inserted: int
    skipped_already_loaded: int


def import_export(
    sessions: SessionFactory,
    wave_id: int,
    path: str | Path | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    parse_elsewhere: bool = True,
) -> IntakeResult:
    """Streams the export into registrant rows, one transaction per chunk.

    A big export is parsed in a process of its own when `parse_elsewhere` (the run may
    start processes: not on a Dask worker, not when the run keeps to one process).

    Resumable: lines already stored (a run that died part-way) are skipped, so a rerun
    finishes the file without duplicating anything.
    """
    with sessions() as session:
        wave = load_wave(session, wave_id)
        if wave.intake_done:
            return IntakeResult(wave.intake_rows, 0, wave.intake_rows)
        path = path or wave.source_path
        if path is None:
            raise ValueError(f"wave {wave_id} has no registrant export to take in")
        last_line = (
            session.execute(select(func.max(R.c.line)).where(R.c.wave_id == wave_id)).scalar() or 0
        )

    check_header(path)  # a refused header raises here, before any process starts
    # A big export is parsed in a process of its own, beside the inserts; a small one
    # is done before such a process would have started.
    parse = _parse_elsewhere if parse_elsewhere and is_big_export(path) else _parse_here
    now = _stamp(utcnow())
    inserted = 0
    with parse(str(path), wave_id, last_line, now) as (chunks, totals):
        for chunk in chunks:
            with sessions() as session, session.begin():
                insert_rows(session.connection(), R, INTAKE_COLUMNS, chunk, prepared=True)
            inserted += len(chunk)
            if progress:
                progress(chunk[-1][1] - 1)
    rows, skipped = totals["rows"], totals["skipped"]

    settle_intake(sessions, wave_id, rows)
    return IntakeResult(rows, inserted, skipped)


def settle_intake(sessions: SessionFactory, wave_id: int, rows: int) -> None:
    """DUPLICATE_NIK (and EMAIL_UNVERIFIED of rows not given it as they were loaded), in
    one transaction that also ends intake.

    Rows that passed checks 1-4 are the ones with a parsed birth date; of those sharing
    a NIK, the earliest (registered_at, line) stays (rules.intake.duplicate_order_key).
    One sort of the wave's NIKs finds them (no index on every NIK: see models.tables).
    """
    reg = Registrant.__table__  # type: ignore[attr-defined]
    now = utcnow()
    ranked = (
        select(
            reg.c.id,
            func.row_number()
            .over(partition_by=reg.c.nik, order_by=(reg.c.registered_at, reg.c.line))
            .label("rank"),
        )
        .where(reg.c.wave_id == wave_id, reg.c.birth_date.is_not(None))
        .subquery()
    )
    later = select(ranked.c.id).where(ranked.c.rank > 1)
    with sessions() as session, session.begin():
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            # Rows just loaded by COPY have no statistics yet: without them the planner
            # takes the wave for one row and runs the ranking once per registrant (a
            # 100,000-row intake did not finish in ten minutes).
            conn.exec_driver_sql(f"ANALYZE {reg.name}")
        conn.execute(
            update(reg)
            .where(
                reg.c.wave_id == wave_id,
                (reg.c.state == State.AWAIT_LOCAL.value)
                | (reg.c.reason == ReasonCode.EMAIL_UNVERIFIED.value),
                reg.c.id.in_(later),
            )
            .values(
                state=State.REJECTED.value, reason=ReasonCode.DUPLICATE_NIK.value, decided_at=now
            )
        )
        # Rows loaded before EMAIL_UNVERIFIED was written with the row (an intake resumed
        # across an upgrade): a read of the accepted rows that changes nothing otherwise.
        conn.execute(
            update(reg)
            .where(
                reg.c.wave_id == wave_id,
                reg.c.state == State.AWAIT_LOCAL.value,
                reg.c.email_verified.is_(False),
            )
            .values(
                state=State.REJECTED.value, reason=ReasonCode.EMAIL_UNVERIFIED.value, decided_at=now
            )
        )
        wave = load_wave(session, wave_id)
        wave.intake_done = True
        wave.intake_rows = rows
        session.add(wave)


def _chunks(path: str, wave_id: int, last_line: int, now: str, totals: dict) -> Iterator[list]:
    """The export's rows after `last_line`, as driver-ready tuples, CHUNK_ROWS at a time."""
    rows = skipped = 0
    with open(path, "rb") as fh:
        _header, records = read_export(fh)
        chunk: list[tuple] = []
        for rec in records:
            rows += 1
            if rec.line <= last_line:
                skipped += 1
                continue
            chunk.append(_record_values(wave_id, rec, now))
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    totals.update(rows=rows, skipped=skipped)


@contextmanager
def _parse_here(path: str, wave_id: int, last_line: int, now: str):
    """Parsing in a thread of this process, overlapping the inserts (SQLite releases the
    GIL while it works); the queue is short, so memory stays at a few chunks."""
    totals: dict = {}
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def offer(item: tuple) -> bool:
        while not stop.is_set():  # the consumer gave up: stop parsing
            try:
                chunks.put(item, timeout=1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for chunk in _chunks(path, wave_id, last_line, now, totals):
                if not offer(("chunk", chunk)):
                    return
            offer(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            offer(("error", exc))

    thread = threading.Thread(target=reader, name=f"intake-reader-{wave_id}", daemon=True)
    thread.start()

    def consume() -> Iterator[list]:
        while True:
            kind, value = chunks.get()
            if kind == "chunk":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    try:
        yield consume(), totals
    finally:
        stop.set()
        thread.join()


def _parse_to_queue(out, path: str, wave_id: int, last_line: int, now: str) -> None:
    """In the parsing process: chunks into `out`, then the totals (or the error)."""
    parent = os.getppid()

    def put(item) -> bool:
        while True:
            try:
                out.put(item, timeout=2)
                return True
            except queue.Full:
                if os.getppid() != parent:  # the importing process is gone
                    return False

    totals: dict = {}
    try:
        for chunk in _chunks(path, wave_id, last_line, now, totals):
            if not put(("chunk", chunk)):
                return
        put(("done", totals))
    except BaseException as exc:  # noqa: BLE001 - handed to the importing process
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - an error that does not cross processes
            exc = IntakeParseError(f"{type(exc).__name__}: {exc}")
        put(("error", exc))


class IntakeParseError(RuntimeError):
    """The parsing process failed; its error class and message (no row contents)."""


@contextmanager
def _parse_elsewhere(path: str, wave_id: int, last_line: int, now: str):
    """Parsing in a process of its own, so that it has a core beside the inserts.

    The rows cross as pickled chunks (a few microseconds a row, much less than parsing).
    """
    context = multiprocessing.get_context("spawn")
    out = context.Queue(maxsize=2)
    proc = context.Process(
        target=_parse_to_queue,
        args=(out, path, wave_id, last_line, now),
        name=f"intake-parser-{wave_id}",
        daemon=True,
    )
    proc.start()
    totals: dict = {}

    def consume() -> Iterator[list]:
        while True:
            try:
                kind, value = out.get(timeout=5)
            except queue.Empty:
                if not proc.is_alive():
                    raise IntakeParseError(
                        f"the parsing process died (exit code {proc.exitcode})"
                    ) from None
                continue
            if kind == "chunk":
                yield value
            elif kind == "error":
                raise value
            else:
                totals.update(value)
                return

    try:
        yield consume(), totals
    finally:
        if proc.is_alive() and not totals:
            proc.terminate()
        proc.join(timeout=10)
        out.close()
