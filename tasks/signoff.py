"""Sign-off before money (wave-rules.md): the wave as it stands, approvals, the credit gate.

`sign_off_status` says what an approver would approve (seats, confirmed participants,
total rupiah, digest) and whether the wave waits; `record_approval` keeps one approval
with what its approver saw (the CLI and the Prefect form both come here);
`credits_allowed` is the gate the rollout checks before any credit is written.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, insert, select
from sqlmodel import Session

from models.db import SessionFactory
from models.queries import R, utcnow
from models.tables import SignOff, Wave
from readmodels.signoff import (
    _approvals,
    required,
    sign_off_status,
    wave_as_it_stands,
)
from rules.signoff import (
    approver_problem,
    same_person_key,
    valid_approvals,
)
from tasks import audit

S = SignOff.__table__  # type: ignore[attr-defined]


class SignOffError(ValueError):
    """An approval the rules refuse; the message says why (never a NIK)."""


# Waves found approved, by (wave, the confirmed list's count and id sum): every credit batch
# asks the gate, and the digest reads and hashes the whole confirmed list (200,000 rows in
# a big wave). Approvals are never withdrawn, only voided by a change of the list, which
# changes its count (the list only grows: everyone ever confirmed) and its id sum.
_approved: set[tuple] = set()


def _list_version(session: Session, wave_id: int) -> tuple[int, int]:
    count, id_sum = session.execute(
        select(func.count(), func.coalesce(func.sum(R.c.id), 0)).where(
            R.c.wave_id == wave_id, R.c.draw_round.is_not(None), R.c.card_number.is_not(None)
        )
    ).one()
    return int(count), int(id_sum)


def credits_allowed(session: Session, wave: Wave) -> bool:
    """The gate before money: no sign-off needed, or enough valid approvals."""
    need = required(wave)
    if not need:
        return True
    key = (
        str(session.connection().engine.url),
        wave.wave_id,
        wave.created_at,  # another database's wave 1, or a wave made again, is another key
        *_list_version(session, wave.wave_id),
    )
    if key in _approved:
        return True
    digest = wave_as_it_stands(session, wave)["digest"]
    allowed = len(valid_approvals(_approvals(session, wave.wave_id), digest)) >= need
    if allowed:
        _approved.add(key)
    return allowed


def record_approval(
    sessions: SessionFactory,
    wave_id: int,
    actor: audit.Actor,
    *,
    via: str,
    seen_digest: str | None = None,
) -> dict[str, Any]:
    """Records `actor`'s approval of the wave as it stands, with what they saw, and its
    audit row, in one transaction. SignOffError: the wave needs none, does not wait, the
    approver already approved it, or (`seen_digest`) it changed since it was shown."""
    problem = approver_problem(actor.who)
    if problem:
        raise SignOffError(problem)
    with sessions() as session, session.begin():
        audit.lock(session)  # also serializes approvals: they read, then write
        wave = session.get(Wave, wave_id)
        if wave is None:
            raise LookupError(f"wave {wave_id} does not exist")
        if not required(wave):
            raise SignOffError(f"wave {wave_id} needs no sign-off (its sign_off is 0)")
        status = sign_off_status(session, wave_id)
        key = same_person_key(actor.who)
        if any(same_person_key(a["by"]) == key for a in status["approvals"]):
            raise SignOffError(f"{actor.who} already approved wave {wave_id} as it stands")
        if not status["waiting"]:
            raise SignOffError(
                f"wave {wave_id} is not waiting for sign-off: {status['not_waiting']}"
            )
        if seen_digest is not None and seen_digest != status["digest"]:
            raise SignOffError(
                f"wave {wave_id} changed since the form was shown (digest "
                f"{seen_digest[:12]}... then, {status['digest'][:12]}... now): approve it again"
            )
        now = utcnow()
        session.connection().execute(
            insert(S),
            [
                {
                    "wave_id": wave_id,
                    "approved_by": actor.who.strip(),
                    "approver_key": key,
                    "host": actor.host,
                    "via": via,
                    "at": now,
                    "seats_json": json.dumps(status["seats"]),
                    "confirmed": status["confirmed"],
                    "total_amount": status["total_amount"],
                    "digest": status["digest"],
                }
            ],
        )
        approvals = [*status["approvals"], {"by": actor.who.strip(), "at": now.isoformat() + "Z"}]
        seen = {k: status[k] for k in ("seats", "confirmed", "total_amount", "digest")}
        audit.append(
            session,
            actor,
            "wave.sign-off",
            wave_id=wave_id,
            before={"approvals": len(status["approvals"]), "required": status["required"]},
            after={**seen, "via": via, "approvals": len(approvals), "required": status["required"]},
        )
    return {
        **status,
        "approvals": approvals,
        "approved": len(approvals) >= status["required"],
        "waiting": len(approvals) < status["required"],
        "approved_now": {"by": actor.who.strip(), "at": now.isoformat() + "Z", **seen},
    }
