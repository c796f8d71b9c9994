"""The few helpers every layer above reads the tables with: the registrant table, a wave
by number, and the clock the program stores (naive UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session

from models.tables import Registrant, Wave

R = Registrant.__table__  # type: ignore[attr-defined]


def utcnow() -> datetime:
    """Naive UTC: both SQLite and PostgreSQL store it the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


def load_wave(session: Session, wave_id: int) -> Wave:
    wave = session.get(Wave, wave_id)
    if wave is None:
        raise LookupError(f"wave {wave_id} does not exist")
    return wave
