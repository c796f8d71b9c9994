"""Local eligibility: age, test score, earlier waves and the revocation list; no partner.

Set-based: one UPDATE rejects whoever fails a check, with the reason of the first check
in rules.eligibility.LOCAL_CHECK_ORDER that they fail; a second passes the rest.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.orm import aliased
from sqlmodel import col

from models.db import SessionFactory
from models.enums import ReasonCode, State
from models.queries import in_id_range
from models.tables import BlacklistEntry, Registrant
from rules.eligibility import LOCAL_CHECK_ORDER, latest_birth_date_of_age
from tasks.common import R, load_wave, utcnow

# A participant of a wave: confirmed or credited there. Paid once in the program
# (wave-rules.md): a NIK that is a participant of any other wave, whatever its number
# (an open wave can outlive the next one), is PRIOR_RECIPIENT here.
PAST_PARTICIPANT_STATES = (State.CONFIRMED.value, State.CREDITED.value)


def participant_elsewhere(nik, wave_id: int, *, earlier_only: bool = False):
    """SQL: the NIK `nik` (a column) is confirmed or credited in a wave other than `wave_id`
    (with `earlier_only`, in a lower-numbered wave: the local check of wave-rules.md).

    Every participant was drawn, so the lookup goes through the small partial index of
    drawn registrants by NIK (ix_registrant_drawn_nik), however big the waves.
    """
    past = aliased(Registrant)
    return exists().where(
        and_(
            col(past.nik) == nik,
            col(past.draw_round).is_not(None),
            col(past.wave_id) < wave_id if earlier_only else col(past.wave_id) != wave_id,
            col(past.state).in_(PAST_PARTICIPANT_STATES),
        )
    )


def any_participant_elsewhere(conn, wave_id: int, *, earlier_only: bool = False) -> bool:
    """Whether any NIK is a participant of a wave other than `wave_id` at all (one probe of
    the partial index of the drawn). In a program's first wave none is: the re-checks
    against other waves then cost nothing, however many registrants they would read."""
    other = R.c.wave_id < wave_id if earlier_only else R.c.wave_id != wave_id
    return (
        conn.execute(
            select(R.c.id)
            .where(R.c.draw_round.is_not(None), other, R.c.state.in_(PAST_PARTICIPANT_STATES))
            .limit(1)
        ).first()
        is not None
    )


def no_pairwise_joins(conn) -> None:
    """For the rest of this transaction on PostgreSQL, no nested loop: a statement that
    checks a wave's rows against the participants of other waves hashes the smaller side
    instead. Planned on statistics gathered before the draw (no drawn row yet), the
    re-check before a backfill round compared each of 1.7 million waitlisted rows with
    each of 232,000 drawn ones, and ran for 15 minutes; hashed, it takes about a second,
    whatever the statistics say."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_nestloop = off")


def participants_elsewhere(session, wave_id: int, niks: list[str]) -> set[str]:
    """Those of `niks` confirmed or credited in a wave other than `wave_id`."""
    if not niks:
        return set()
    return set(
        session.execute(
            select(R.c.nik).where(
                R.c.nik.in_(niks),
                R.c.draw_round.is_not(None),
                R.c.wave_id != wave_id,
                R.c.state.in_(PAST_PARTICIPANT_STATES),
            )
        ).scalars()
    )


def reject_prior_recipients(sessions: SessionFactory, wave_id: int, state: str) -> int:
    """Rejects, with PRIOR_RECIPIENT, the wave's registrants in `state` (eligible before the
    draw, waitlisted before a backfill round or a quota raise) who are participants of
    another wave: none of them is offered a seat. One UPDATE, committed at once, so that
    the draw's or the round's own reading of the pool sees it."""
    with sessions() as session, session.begin():
        conn = session.connection()
        if not any_participant_elsewhere(conn, wave_id):
            return 0
        no_pairwise_joins(conn)
        return (
            conn.execute(
                update(R)
                .where(
                    R.c.wave_id == wave_id,
                    R.c.state == state,
                    participant_elsewhere(R.c.nik, wave_id),
                )
                .values(
                    state=State.REJECTED.value,
                    reason=ReasonCode.PRIOR_RECIPIENT.value,
                    decided_at=utcnow(),
                )
            ).rowcount
            or 0
        )


def _failing(reason: ReasonCode, wave):
    """The SQL condition under which a registrant fails `reason`'s check."""
    if reason == ReasonCode.UNDERAGE:
        return R.c.birth_date > latest_birth_date_of_age(wave.reference_date, wave.min_age)
    if reason == ReasonCode.TEST_FAILED:
        return R.c.test_score < wave.min_test_score
    if reason == ReasonCode.PRIOR_RECIPIENT:
        # Local eligibility looks at earlier waves (wave-rules.md); a participant
        # of a later wave is caught where a seat is given (draw, backfill, accounts,
        # credit), with the same reason.
        return participant_elsewhere(R.c.nik, wave.wave_id, earlier_only=True)
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
    counts: Counter = Counter()
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        conn = session.connection()
        waiting = and_(*in_id_range(wave_id, [State.AWAIT_LOCAL.value], lo, hi))
        # No earlier wave's participant at all (the program's first wave): the check
        # against earlier waves reads nothing.
        earlier = any_participant_elsewhere(conn, wave_id, earlier_only=True)
        checks = [
            (_failing(reason, wave), reason.value)
            for reason in LOCAL_CHECK_ORDER
            if earlier or reason != ReasonCode.PRIOR_RECIPIENT
        ]
        # Two passes over the batch, not one per check: the few who fail any check are
        # rejected with the first failing check's reason (a CASE in check order), then
        # everyone still waiting passes.
        rejected = conn.execute(
            update(R)
            .where(waiting, or_(*(failing for failing, _ in checks)))
            .values(state=State.REJECTED.value, reason=case(*checks), decided_at=now)
            .returning(R.c.reason)
        ).scalars()
        counts.update(rejected)
        passed = conn.execute(
            update(R).where(waiting).values(state=State.AWAIT_IDENTITY.value)
        ).rowcount
        if passed:
            counts["passed"] = passed
    return dict(counts)
