"""Sign-off as it stands (wave-rules.md, "Sign-off before money"): what an approver
would approve (seats, confirmed participants, total rupiah, the digest of the confirmed
list) and whether the wave waits. Reads only: tasks/signoff.py records approvals and
keeps the credit gate."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from models.enums import State, WaveStatus
from models.queries import R, load_wave
from models.tables import SignOff, Wave
from readmodels.approval_audit import wave_sign_off_rows
from rules.signature import Approvers
from rules.signoff import Approval, approved_list_digest, matches_audit, valid_approvals

S = SignOff.__table__  # type: ignore[attr-defined]


def required(wave: Wave) -> int:
    return int(wave.sign_off or 0)


def seats_of(wave: Wave) -> Any:
    """The seats as approved: the quota (national), or seats by province."""
    if wave.allocation == "provincial" and wave.seats_json:
        return json.loads(wave.seats_json).get("seats") or {}
    return wave.quota


def _confirmed_pairs(session: Session, wave_id: int):
    # Everyone ever confirmed (a card number), credited or not: the list stays the same
    # while it is credited, and changes only when someone is confirmed (a raise, backfill).
    return session.execute(
        select(R.c.nik, R.c.card_number)
        .where(R.c.wave_id == wave_id, R.c.draw_round.is_not(None), R.c.card_number.is_not(None))
        .order_by(R.c.nik, R.c.card_number)
        .execution_options(yield_per=50_000)
    )


def wave_as_it_stands(session: Session, wave: Wave) -> dict[str, Any]:
    """What an approver approves: seats, confirmed participants, total rupiah, digest."""
    n = 0

    def counted():
        nonlocal n
        for nik, card in _confirmed_pairs(session, wave.wave_id):
            n += 1
            yield nik, card

    seats = seats_of(wave)
    digest = approved_list_digest(
        seed_sha256=wave.lottery_seed_sha256,
        seats=seats,
        training_balance=wave.training_balance,
        confirmed=counted(),
    )
    return {
        "wave_id": wave.wave_id,
        "seats": seats,
        "confirmed": n,
        "training_balance": wave.training_balance,
        "total_amount": n * wave.training_balance,
        "digest": digest,
    }


def _approvals(session: Session, wave_id: int) -> list[Approval]:
    audited = wave_sign_off_rows(session, wave_id)
    out = []
    for r in session.execute(select(S).where(S.c.wave_id == wave_id).order_by(S.c.id)):
        a = Approval(
            r.approved_by, r.at.isoformat() + "Z", r.digest, r.signature, r.key_fingerprint
        )
        out.append(replace(a, audited=matches_audit(a, audited)))
    return out


def counted_approvals(
    session: Session, wave: Wave, digest: str, approvers: Approvers | None
) -> list[Approval]:
    """The approvals that count for the wave as it stands (`digest`): its own digest,
    signed by their approver under an approvers file, and standing in the audit trail."""
    return valid_approvals(
        _approvals(session, wave.wave_id),
        digest,
        approvers=approvers,
        kind="wave",
        ident=wave.wave_id,
    )


def _count(session: Session, wave_id: int, state: State) -> int:
    return session.execute(
        select(func.count()).where(R.c.wave_id == wave_id, R.c.state == state.value)
    ).scalar_one()


def sign_off_status(
    session: Session, wave_id: int, *, approvers: Approvers | None
) -> dict[str, Any]:
    """The wave as it stands, its valid approvals, and whether it waits for sign-off
    (`waiting`; `not_waiting` says why not, when it needs sign-off but does not wait).
    `signed`: approvals need their approver's signature (an approvers file), else they
    are unsigned."""
    wave = load_wave(session, wave_id)
    need = required(wave)
    facts = wave_as_it_stands(session, wave) if need else {}
    valid = counted_approvals(session, wave, facts["digest"], approvers) if need else []
    approved = len(valid) >= need
    why = None
    if need and not approved:
        unanswered = _count(session, wave_id, State.SELECTED)
        to_credit = _count(session, wave_id, State.CONFIRMED)
        if wave.status == WaveStatus.CLOSED:
            why = "it is closed"
        elif wave.drawn_at is None:
            why = "it has not been drawn yet"
        elif unanswered:
            why = f"its accounts stage is not finished ({unanswered} selected wait for it)"
        elif not to_credit:
            why = "no confirmed participant waits for a credit"
    elif need:
        why = f"it already has the {need} approval{'s' * (need > 1)} it needs"
    return {
        **facts,
        "wave_id": wave_id,
        "required": need,
        "approvals": [
            {"by": a.by, "at": a.at, "signed": a.signature is not None, "key": a.fingerprint}
            for a in valid
        ],
        "signed": approvers is not None,
        "approved": approved,
        "waiting": bool(need) and not approved and why is None,
        "not_waiting": why,
    }
