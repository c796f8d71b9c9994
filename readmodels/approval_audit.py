"""The sign-off rows of the audit trail, as the money gates compare them with the approvals
(wave-rules.md: money moves only on approvals that also stand in the audit trail,
unchanged). Reads only; tasks/audit.py writes the trail."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from models.tables import AuditEntry
from rules.audit import row_hash

A = AuditEntry.__table__  # type: ignore[attr-defined]
WAVE_SIGN_OFF = "wave.sign-off"
PAYOUT_SIGN_OFF = "payout.sign-off"


def _standing(session: Session, action: str, wave_id: int | None):
    q = select(A).where(A.c.action == action).order_by(A.c.id)
    if wave_id is not None:
        q = q.where(A.c.wave_id == wave_id)
    for r in session.execute(q):
        # A row whose stored hash is not its content's was changed after it was written
        # (the whole chain is `prakerja audit --verify`'s): it vouches for nothing.
        own = row_hash(
            id=r.id,
            at=r.at,
            who=r.who,
            host=r.host,
            action=r.action,
            wave_id=r.wave_id,
            before=r.before_json,
            after=r.after_json,
            prev_hash=r.prev_hash,
        )
        if own == r.hash and r.after_json is not None:
            yield r.who, json.loads(r.after_json)


def wave_sign_off_rows(session: Session, wave_id: int) -> list[tuple[str, dict[str, Any]]]:
    """(who, after) of every intact `wave.sign-off` row of the wave, oldest first."""
    return list(_standing(session, WAVE_SIGN_OFF, wave_id))


def payout_sign_off_rows(session: Session, as_of: date) -> list[tuple[str, dict[str, Any]]]:
    """(who, after) of every intact `payout.sign-off` row of the run of `as_of`."""
    day = as_of.isoformat()
    return [
        (who, after)
        for who, after in _standing(session, PAYOUT_SIGN_OFF, None)
        if after.get("as_of") == day
    ]
