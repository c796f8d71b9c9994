"""The dashboard's index of a wave's NIKs (models.tables.PortalPerson), and announcement.

Intake keeps no index over every NIK while it loads (random inserts into one doubled its
cost). The dashboard needs one: a person's whole view must be one indexed lookup. So
after intake this builds it once per wave, in NIK order (one sort, sequential inserts),
choosing for each NIK the row that counts (portal.md): the earliest accepted row (one
that passed intake), else the first row with that NIK. Only valid NIKs are indexed: a
row whose NIK is malformed is nobody's to sign in with.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, delete, func, insert, literal, select

from models.db import SessionFactory
from models.enums import ReasonCode
from models.tables import PortalPerson, Wave
from rules.nik import is_valid_nik
from tasks import audit
from tasks.audit import Actor
from tasks.common import R, load_wave, utcnow

P = PortalPerson.__table__  # type: ignore[attr-defined]

INTAKE_REJECTIONS = [
    ReasonCode.MALFORMED_ROW.value,
    ReasonCode.MISSING_FIELD.value,
    ReasonCode.INVALID_NIK.value,
    ReasonCode.NIK_DATA_MISMATCH.value,
    ReasonCode.DUPLICATE_NIK.value,
    ReasonCode.EMAIL_UNVERIFIED.value,
]
# Rows rejected before the NIK was judged: their NIK may or may not be valid.
_NIK_NOT_JUDGED = [ReasonCode.MALFORMED_ROW.value, ReasonCode.MISSING_FIELD.value]
MAX_MESSAGE = 1000


class AnnounceError(ValueError):
    """An announcement refused (portal.md): unknown wave, draw not run, bad message."""


valid_nik = is_valid_nik  # the rule lives in rules.nik


def build_portal_index(sessions: SessionFactory, wave_id: int) -> dict:
    """Fills portal_person for the wave (once; a rerun finds it built). Returns counts."""
    with sessions() as session:
        wave = load_wave(session, wave_id)
        if wave.portal_indexed_at is not None:
            return {"indexed": 0, "already": True}
        if not wave.intake_done:
            raise ValueError(f"wave {wave_id}: intake has not finished")
    rejected_at_intake = R.c.reason.in_(INTAKE_REJECTIONS)
    ranked = (
        select(
            R.c.nik,
            R.c.id,
            func.row_number()
            .over(
                partition_by=R.c.nik,
                order_by=(case((rejected_at_intake, 1), else_=0), R.c.line),
            )
            .label("rank"),
        )
        .where(
            R.c.wave_id == wave_id,
            R.c.nik.is_not(None),
            func.length(R.c.nik) == 16,
            # Rows that passed the NIK checks carry a birth date; the others are kept
            # only where the NIK was not what failed, and are judged below.
            (R.c.birth_date.is_not(None)) | R.c.reason.in_(_NIK_NOT_JUDGED + ["NIK_DATA_MISMATCH"]),
        )
        .subquery()
    )
    chosen = (
        select(ranked.c.nik, literal(wave_id), ranked.c.id)
        .where(ranked.c.rank == 1)
        .order_by(ranked.c.nik)
    )
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        if wave.portal_indexed_at is not None:  # another process built it meanwhile
            return {"indexed": 0, "already": True}
        conn = session.connection()
        conn.execute(delete(P).where(P.c.wave_id == wave_id))
        conn.execute(insert(P).from_select(["nik", "wave_id", "registrant_id"], chosen))
        # Rows rejected before their NIK was judged: drop the NIKs that are not valid.
        unjudged = conn.execute(
            select(P.c.nik)
            .join(R, R.c.id == P.c.registrant_id)
            .where(P.c.wave_id == wave_id, R.c.birth_date.is_(None))
        ).scalars()
        invalid = [nik for nik in unjudged if not valid_nik(nik)]
        for start in range(0, len(invalid), 1000):
            conn.execute(
                delete(P).where(P.c.wave_id == wave_id, P.c.nik.in_(invalid[start : start + 1000]))
            )
        indexed = conn.execute(
            select(func.count()).select_from(P).where(P.c.wave_id == wave_id)
        ).scalar_one()
        wave.portal_indexed_at = utcnow()
        session.add(wave)
    with sessions() as session:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            # Millions of rows just written: without fresh statistics PostgreSQL guesses
            # thousands of rows per NIK and plans every dashboard read as a big join.
            conn.exec_driver_sql("ANALYZE portal_person")
            session.commit()
    return {"indexed": int(indexed), "already": False}


def announce_wave(
    sessions: SessionFactory,
    wave_id: int,
    message: str | None,
    *,
    now: datetime | None = None,
    actor: Actor | None = None,
) -> dict:
    """Publishes the wave's results on the dashboard (portal.md, "Announcement").

    A second announcement replaces the message and keeps the first publication time.
    """
    if message is not None and len(message) > MAX_MESSAGE:
        raise AnnounceError(f"--message: at most {MAX_MESSAGE} characters (got {len(message)})")
    with sessions() as session:
        wave = session.get(Wave, wave_id)
        if wave is None:
            raise AnnounceError(f"wave {wave_id} does not exist")
        if wave.drawn_at is None:
            raise AnnounceError(
                f"wave {wave_id}: the draw has not run, so there is nothing to announce"
            )
    index = build_portal_index(sessions, wave_id)
    with sessions() as session, session.begin():
        if actor is not None:
            audit.lock(session)
        wave = load_wave(session, wave_id)
        before = {"announced_at": _iso(wave.announced_at), "message": wave.announce_message}
        first = wave.announced_at is None
        if first:
            wave.announced_at = now or utcnow()
        wave.announce_message = message or ""
        session.add(wave)
        announced_at = wave.announced_at
        if actor is not None:
            session.flush()
            after = {"announced_at": _iso(announced_at), "message": wave.announce_message}
            audit.append(
                session, actor, "wave.announced", wave_id=wave_id, before=before, after=after
            )
    return {
        "wave_id": wave_id,
        "announced_at": announced_at,
        "first_announcement": first,
        "indexed": index["indexed"],
        "index_built_now": not index["already"],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def demo_sign_ins(sessions: SessionFactory, wave_id: int) -> list[tuple[str, str]]:
    """A few registrants of the (synthetic) demo wave to sign in as: credited, rejected
    with a reason, not selected. For `prakerja demo` only."""
    from rules.outcomes import outcome_of

    picks: list[tuple[str, str]] = []
    seen: set[str] = set()
    with sessions() as session:
        for state in ("CREDITED", "REJECTED", "NOT_SELECTED", "WAITLISTED"):
            row = session.execute(
                select(R.c.nik, R.c.state, R.c.reason, R.c.pending_stage)
                .join(P, (P.c.registrant_id == R.c.id) & (P.c.wave_id == wave_id))
                .where(R.c.wave_id == wave_id, R.c.state == state, R.c.phone.is_not(None))
                .order_by(R.c.id)
                .limit(1)
            ).first()
            if row is not None and row.nik not in seen:
                seen.add(row.nik)
                outcome, reason = outcome_of(row.state, row.reason, row.pending_stage)
                picks.append((row.nik, f"{outcome} {reason}".strip()))
    return picks
