"""Local eligibility: age, test score, earlier waves and the revocation list; no partner.

Set-based: one UPDATE per check, in rules.eligibility.LOCAL_CHECK_ORDER, each touching
only the batch's registrants still waiting, so the first failing check gives the reason.
"""

from __future__ import annotations

from sqlalchemy import and_, exists, update
from sqlalchemy.orm import aliased

from models.db import SessionFactory
from models.enums import ReasonCode, State
from models.tables import BlacklistEntry, Registrant
from rules.eligibility import LOCAL_CHECK_ORDER, latest_birth_date_of_age
from tasks.common import R, load_wave, utcnow

# "Earlier wave" means a lower wave number: waves are numbered in the order they run.
PAST_PARTICIPANT_STATES = (State.CONFIRMED.value, State.CREDITED.value)


def _failing(reason: ReasonCode, wave):
    """The SQL condition under which a registrant fails `reason`'s check."""
    if reason == ReasonCode.UNDERAGE:
        return R.c.birth_date > latest_birth_date_of_age(wave.reference_date, wave.min_age)
    if reason == ReasonCode.TEST_FAILED:
        return R.c.test_score < wave.min_test_score
    if reason == ReasonCode.PRIOR_RECIPIENT:
        past = aliased(Registrant)
        return exists().where(
            and_(
                past.nik == R.c.nik,
                past.draw_round.is_not(None),  # every participant was drawn: the small index
                past.wave_id < wave.wave_id,
                past.state.in_(PAST_PARTICIPANT_STATES),
            )
        )
    if reason == ReasonCode.BLACKLISTED:
        listed = BlacklistEntry.__table__  # type: ignore[attr-defined]
        return exists().where(listed.c.nik == R.c.nik)
    raise ValueError(f"no local check for {reason}")


def check_local_eligibility_batch(
    sessions: SessionFactory, wave_id: int, id_range: tuple[int, int]
) -> dict[str, int]:
    """Decides a batch of intake-accepted registrants; returns counts by result."""
    lo, hi = id_range
    now = utcnow()
    counts: dict[str, int] = {}
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        conn = session.connection()
        waiting = and_(
            R.c.wave_id == wave_id, R.c.state == State.AWAIT_LOCAL.value, R.c.id >= lo, R.c.id <= hi
        )
        for reason in LOCAL_CHECK_ORDER:
            n = conn.execute(
                update(R)
                .where(waiting, _failing(reason, wave))
                .values(state=State.REJECTED.value, reason=reason.value, decided_at=now)
            ).rowcount
            if n:
                counts[reason.value] = n
        passed = conn.execute(
            update(R).where(waiting).values(state=State.AWAIT_IDENTITY.value)
        ).rowcount
        if passed:
            counts["passed"] = passed
    return counts
