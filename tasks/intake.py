"""Intake: stream a registrant export into the wave, then settle duplicates and email checks."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
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

CHUNK_ROWS = 20_000  # rows per transaction: fewer, bigger commits


class SourceMismatchError(ValueError):
    """The wave was started from another file: resuming it from this one would mix waves."""


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


def _stamp(value: datetime) -> str:
    # The text SQLAlchemy stores naive datetimes as on SQLite; PostgreSQL parses it too.
    return value.isoformat(sep=" ", timespec="microseconds")


def _record_values(wave_id: int, rec: IntakeRecord, now: str) -> tuple:
    """One registrant row in INTAKE_COLUMNS order, with driver-ready values."""
    row = rec.row
    if rec.reason is not None or row is None:
        reason = (rec.reason or ReasonCode.MALFORMED_ROW).value
        return (wave_id, rec.line, rec.registration_id, rec.nik, *_NO_FIELDS, rec.raw,
                _REJECTED, reason, now, False)  # fmt: skip
    return (
        wave_id, rec.line, row.registration_id, row.nik, row.kk_number, row.full_name,
        row.birth_date.isoformat(), row.gender, row.email, row.email_verified, row.phone,
        row.domicile_regency_code, province_of(row.domicile_regency_code), row.test_score,
        row.payout_provider, row.payout_account,
        _stamp(row.registered_at.astimezone(UTC).replace(tzinfo=None)),
        None, _ACCEPTED, None, None, False,
    )  # fmt: skip


_NO_FIELDS = (None,) * 13


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
) -> IntakeResult:
    """Streams the export into registrant rows, one transaction per chunk.

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

    rows = inserted = skipped = 0
    # Parsing (this thread) and inserting (the writer) overlap: SQLite releases the GIL
    # while it works. The queue is short, so memory stays at a few chunks.
    chunks: queue.Queue[list[tuple] | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal inserted
        while (chunk := chunks.get()) is not None:
            if failure:
                continue
            try:
                with sessions() as session, session.begin():
                    insert_rows(session.connection(), R, INTAKE_COLUMNS, chunk, prepared=True)
                inserted += len(chunk)
                if progress:
                    progress(chunk[-1][1] - 1)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller below
                failure.append(exc)

    thread = threading.Thread(target=writer, name=f"intake-writer-{wave_id}", daemon=True)
    thread.start()
    try:
        with open(path, "rb") as fh:
            _header, records = read_export(fh)
            now = _stamp(utcnow())
            chunk: list[tuple] = []
            for rec in records:
                rows += 1
                if rec.line <= last_line:
                    skipped += 1
                    continue
                chunk.append(_record_values(wave_id, rec, now))
                if len(chunk) >= CHUNK_ROWS:
                    chunks.put(chunk)
                    chunk = []
                    if failure:
                        break
            if chunk:
                chunks.put(chunk)
    finally:
        chunks.put(None)
        thread.join()
    if failure:
        raise failure[0]

    settle_intake(sessions, wave_id, rows)
    return IntakeResult(rows, inserted, skipped)


def settle_intake(sessions: SessionFactory, wave_id: int, rows: int) -> None:
    """DUPLICATE_NIK then EMAIL_UNVERIFIED, in one transaction that also ends intake.

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
        conn.execute(
            update(reg)
            .where(
                reg.c.wave_id == wave_id,
                reg.c.state == State.AWAIT_LOCAL.value,
                reg.c.id.in_(later),
            )
            .values(
                state=State.REJECTED.value, reason=ReasonCode.DUPLICATE_NIK.value, decided_at=now
            )
        )
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
