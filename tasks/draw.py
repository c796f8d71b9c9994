"""The draw, backfill rounds and quota raises: seats offered in (priority, sha256 key) order."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

from sqlalchemy import func, select, update
from sqlmodel import Session

from models.db import SessionFactory
from models.enums import Allocation, ReasonCode, Stage, State, WaveStatus, reasons_of
from rules.draw import (
    Candidate,
    PoolDigest,
    SeatWalker,
    backfill_round,
    provincial_seats,
    raised_seats,
)
from tasks import audit
from tasks.audit import Actor
from tasks.common import R, bulk_update, load_wave, rebuilt_waitlist_index, utcnow
from tasks.eligibility import reject_prior_recipients

ACCOUNT_REASONS = tuple(sorted(reasons_of(Stage.ACCOUNTS)))
HOLDS_SEAT = (State.SELECTED.value, State.CONFIRMED.value, State.CREDITED.value)
BEFORE_DRAW = (State.AWAIT_LOCAL.value, State.AWAIT_IDENTITY.value, State.AWAIT_SCREENING.value)


class QuotaError(ValueError):
    """A quota change the rules refuse (closed wave, or lower than before)."""


def household_counts(session: Session, wave_id: int) -> Counter:
    """Participants per family card: earlier waves' confirmed/credited, this wave's seats."""
    counts: Counter = Counter()
    earlier = session.execute(
        select(R.c.kk_number, func.count())
        .where(R.c.wave_id < wave_id, R.c.state.in_([State.CONFIRMED.value, State.CREDITED.value]))
        .group_by(R.c.kk_number)
    )
    current = session.execute(
        select(R.c.kk_number, func.count())
        # (Every seat holder was drawn: the partial index of the drawn covers this.)
        .where(R.c.wave_id == wave_id, R.c.draw_round.is_not(None), R.c.state.in_(HOLDS_SEAT))
        .group_by(R.c.kk_number)
    )
    for kk, n in list(earlier) + list(current):
        counts[kk] += n
    return counts


def _candidates(
    session: Session, wave_id: int, state: str, *, first_page: int | None = None
) -> Iterator[tuple[int, Candidate]]:
    """The wave's registrants in `state`, in draw order, streamed (2 million in a big pool).

    With `first_page`, read page by page (each twice the last) instead of sorting the
    whole set up front: a backfill round needs the head of a waitlist of millions, which
    the partial index of the waitlisted holds in draw order (models.tables). (The draw's
    own pool, the eligible, has no such index: it is sorted once.)
    """
    columns = (R.c.id, R.c.nik, R.c.kk_number, R.c.province, R.c.priority, R.c.draw_key)
    where = [R.c.wave_id == wave_id, R.c.state == state, R.c.draw_key.is_not(None)]
    order = (R.c.priority.desc(), R.c.draw_key.asc())
    if first_page is None:
        rows = session.execute(
            select(*columns).where(*where).order_by(*order).execution_options(yield_per=20_000)
        )
        for rid, nik, kk, province, priority, key in rows:
            yield rid, Candidate(nik, kk, province, bool(priority), key)
        return
    # Priority first, then the rest, each in key order: the partial index of the
    # waitlisted (ix_registrant_waitlist) holds exactly that order for `state`
    # WAITLISTED, so a page is read from the head of the index, not by sorting all.
    for priority in (True, False):
        page, after = first_page, None
        while True:
            query = select(*columns).where(*where, R.c.priority == priority)
            if after is not None:
                query = query.where(R.c.draw_key > after)  # keys are unique within a wave
            got = session.execute(query.order_by(R.c.draw_key.asc()).limit(page)).all()
            for rid, nik, kk, province, prio, key in got:
                yield rid, Candidate(nik, kk, province, bool(prio), key)
            if len(got) < page:
                break
            after = got[-1].draw_key
            page *= 2


def _waitlist_the_eligible(session: Session, wave_id: int, now) -> int:
    """Everyone of the wave still eligible goes on the waitlist; returns how many."""
    moved = session.connection().execute(
        update(R)
        .where(R.c.wave_id == wave_id, R.c.state == State.ELIGIBLE.value)
        .values(state=State.WAITLISTED.value, drawn_at=now)
    )
    return moved.rowcount or 0


def waiting_before_draw(session: Session, wave_id: int) -> int:
    return session.execute(
        select(func.count()).where(R.c.wave_id == wave_id, R.c.state.in_(BEFORE_DRAW))
    ).scalar_one()


def draw_participants(
    sessions: SessionFactory, wave_id: int, *, without_pending: bool = False
) -> dict:
    """Runs the wave's draw once; later calls only waitlist late arrivals.

    Held (no change) while anyone may still become eligible, unless the operator draws
    without them (recorded on the wave). Eligible registrants who are participants of
    another wave are rejected (PRIOR_RECIPIENT) first: they are not in the pool.
    """
    with sessions() as session:
        wave = load_wave(session, wave_id)
        held = (
            wave.drawn_at is None and not without_pending and waiting_before_draw(session, wave_id)
        )
    if not held:
        reject_prior_recipients(sessions, wave_id, State.ELIGIBLE.value)
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        now = utcnow()
        if wave.drawn_at is not None:
            late = _waitlist_the_eligible(session, wave_id, now)  # a few late arrivals
            return {"drawn": True, "already": True, "late_waitlisted": late}
        waiting = waiting_before_draw(session, wave_id)
        if waiting and not without_pending:
            return {"drawn": False, "held_by_pending": waiting}
        pool_counts = dict(
            session.execute(
                select(R.c.province, func.count())
                .where(R.c.wave_id == wave_id, R.c.state == State.ELIGIBLE.value)
                .group_by(R.c.province)
            ).all()
        )
        pool_size = sum(pool_counts.values())
        seats: int | dict[str, int] = (
            provincial_seats(wave.quota, pool_counts)
            if wave.allocation == Allocation.PROVINCIAL
            else wave.quota
        )
        walker = SeatWalker(
            seats=seats,
            household_cap=wave.household_cap,
            household_counts=household_counts(session, wave_id),
        )
        decided: list[dict] = []
        digest = PoolDigest()
        outcome_counts: Counter = Counter()
        with sessions() as reader:
            for rid, cand in _candidates(reader, wave_id, State.ELIGIBLE.value):
                digest.add(cand.key)
                if walker.full:
                    continue
                outcome = walker.offer(cand)
                if outcome == "SELECTED":
                    decided.append(
                        {
                            "_id": rid,
                            "state": State.SELECTED.value,
                            "draw_round": 0,
                            "drawn_at": now,
                        }
                    )
                elif outcome == "HOUSEHOLD_CAP":
                    decided.append(
                        {
                            "_id": rid,
                            "state": State.NOT_SELECTED.value,
                            "reason": ReasonCode.HOUSEHOLD_CAP.value,
                            "drawn_at": now,
                            "decided_at": now,
                        }
                    )
                outcome_counts[outcome] += 1
        bulk_update(session, decided, expect_state=[State.ELIGIBLE.value])
        with rebuilt_waitlist_index(session):  # the whole rest of the pool joins it
            waitlisted = _waitlist_the_eligible(session, wave_id, now)
        wave.drawn_at = now
        wave.draw_without_pending = bool(waiting)
        wave.pool_size = pool_size
        wave.pool_digest = digest.hexdigest()
        wave.seats_json = json.dumps(
            {"pool_counts": pool_counts, "seats": seats if isinstance(seats, dict) else None}
        )
        session.add(wave)
        return {
            "drawn": True,
            "quota": wave.quota,  # the progress line: "drew N of quota Q"
            "pool_size": pool_size,
            "pool_digest": wave.pool_digest,
            "selected": outcome_counts["SELECTED"],
            "household_cap": outcome_counts["HOUSEHOLD_CAP"],
            "waitlisted": waitlisted,
            "without_pending": waiting,
        }


def free_seats(session: Session, wave_id: int) -> int | dict[str, int]:
    """Seats not held: failed payout accounts free theirs (with backfill), and a drawn
    registrant found to be another wave's participant frees theirs (always: the seat goes
    to the next in line); nothing else does."""
    wave = load_wave(session, wave_id)
    freeing = [ReasonCode.PRIOR_RECIPIENT.value]
    if wave.backfill:
        freeing += ACCOUNT_REASONS
    counted = R.c.draw_round.is_not(None) & ~(R.c.reason.in_(freeing) & R.c.reason.is_not(None))
    held = dict(
        session.execute(
            select(R.c.province, func.count())
            .where(R.c.wave_id == wave_id, counted)
            .group_by(R.c.province)
        ).all()
    )
    if wave.allocation != Allocation.PROVINCIAL:
        return max(0, wave.quota - sum(held.values()))
    seats = json.loads(wave.seats_json or "{}").get("seats") or {}
    return {p: max(0, n - held.get(p, 0)) for p, n in seats.items()}


def seats_to_refill(session: Session, wave_id: int) -> bool:
    """Whether a free seat has a waitlisted registrant (of its province) to offer it to:
    the wave is not done (e.g. a credit refused as PRIOR_RECIPIENT freed a seat)."""
    wave = load_wave(session, wave_id)
    if wave.drawn_at is None or wave.status == WaveStatus.CLOSED:
        return False
    seats = free_seats(session, wave_id)
    waiting = select(R.c.id).where(R.c.wave_id == wave_id, R.c.state == State.WAITLISTED.value)
    if isinstance(seats, int):
        if seats <= 0:
            return False
    else:
        provinces = [p for p, n in seats.items() if n > 0]
        if not provinces:
            return False
        waiting = waiting.where(R.c.province.in_(provinces))
    return session.execute(waiting.limit(1)).first() is not None


def accounts_unanswered(session: Session, wave_id: int) -> int:
    return session.execute(
        select(func.count()).where(R.c.wave_id == wave_id, R.c.state == State.SELECTED.value)
    ).scalar_one()


def _round_held(session: Session, wave_id: int) -> str | None:
    """Why no backfill round can run now, or None."""
    wave = load_wave(session, wave_id)
    if wave.drawn_at is None:
        return "not drawn"
    if wave.status == WaveStatus.CLOSED:
        return "closed"
    if accounts_unanswered(session, wave_id):
        return "held: payout accounts pending"
    seats = free_seats(session, wave_id)
    if (seats if isinstance(seats, int) else sum(seats.values())) <= 0:
        return "no free seats"
    return None


def fill_free_seats(sessions: SessionFactory, wave_id: int) -> dict:
    """One backfill round: free seats go to the waitlist in draw order.

    Held while any selected registrant's payout account has no answer yet. Waitlisted
    registrants who are participants of another wave are rejected (PRIOR_RECIPIENT)
    before the round: the seats go to the next in line.
    """
    with sessions() as session:
        if _round_held(session, wave_id) is None:
            reject_prior_recipients(sessions, wave_id, State.WAITLISTED.value)
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        held = _round_held(session, wave_id)
        if held is not None:
            return {"selected": 0, "reason": held}
        seats = free_seats(session, wave_id)
        total_free = seats if isinstance(seats, int) else sum(seats.values())
        round_no = (
            session.execute(
                select(func.max(R.c.draw_round)).where(
                    R.c.wave_id == wave_id, R.c.draw_round.is_not(None)
                )
            ).scalar()
            or 0
        ) + 1
        counts = household_counts(session, wave_id)
        now = utcnow()
        with sessions() as reader:
            ids: dict[str, int] = {}

            def waitlist() -> Iterator[Candidate]:
                # Most rounds fill their seats from the first page.
                first_page = max(1_000, 2 * total_free)
                for rid, cand in _candidates(
                    reader, wave_id, State.WAITLISTED.value, first_page=first_page
                ):
                    ids[cand.nik] = rid
                    yield cand

            decisions = backfill_round(
                free_seats=seats,
                waitlist=waitlist(),
                household_cap=wave.household_cap,
                household_counts=counts,
            )
        changes = []
        tally: Counter = Counter()
        for nik, outcome in decisions:
            tally[outcome] += 1
            if outcome == "SELECTED":
                changes.append(
                    {
                        "_id": ids[nik],
                        "state": State.SELECTED.value,
                        "draw_round": round_no,
                        "drawn_at": now,
                    }
                )
            else:
                changes.append(
                    {
                        "_id": ids[nik],
                        "state": State.NOT_SELECTED.value,
                        "reason": ReasonCode.HOUSEHOLD_CAP.value,
                        "decided_at": now,
                    }
                )
        bulk_update(session, changes, expect_state=[State.WAITLISTED.value])
        return {
            "round": round_no,
            "selected": tally["SELECTED"],
            "household_cap": tally["HOUSEHOLD_CAP"],
        }


def raise_quota(
    sessions: SessionFactory,
    wave_id: int,
    new_quota: int,
    *,
    lease_owner: str | None = None,
    actor: Actor | None = None,
) -> dict:
    """Raises an open wave's quota; the new seats are filled by the next round.

    One conditional UPDATE: it changes the wave only if it is still open, still has the
    quota read here and (given `lease_owner`) is still held by that lease; otherwise
    nothing changes and QuotaError says why."""
    from models.tables import Wave

    w = Wave.__table__  # type: ignore[attr-defined]
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        if wave.status == WaveStatus.CLOSED:
            raise QuotaError(f"wave {wave_id} is closed: its quota cannot be raised")
        if new_quota < wave.quota:
            raise QuotaError(
                f"--quota {new_quota} is below wave {wave_id}'s quota {wave.quota}: "
                "a quota can only be raised"
            )
        old = wave.quota
        wave.quota = new_quota
        added: int | dict[str, int] = new_quota - old
        if wave.drawn_at is not None and wave.allocation == Allocation.PROVINCIAL:
            stored = json.loads(wave.seats_json or "{}")
            pool_counts = stored.get("pool_counts") or {}
            grown = raised_seats(
                old_quota=old,
                new_quota=new_quota,
                allocation=wave.allocation,
                pool_counts=pool_counts,
            )
            assert isinstance(grown, dict)  # provincial: the seats each province gains
            added = grown
            seats = stored.get("seats") or {}
            for p, extra in grown.items():
                seats[p] = seats.get(p, 0) + extra
            stored["seats"] = seats
            wave.seats_json = json.dumps(stored)
        seats_json = wave.seats_json
        session.expunge(wave)  # the UPDATE below is the only write
        cond = [w.c.wave_id == wave_id, w.c.status == WaveStatus.OPEN, w.c.quota == old]
        if lease_owner is not None:
            cond.append(w.c.lease_owner == lease_owner)
        changed = (
            session.connection()
            .execute(update(w).where(*cond).values(quota=new_quota, seats_json=seats_json))
            .rowcount
        )
        if not changed:
            raise QuotaError(
                f"wave {wave_id} changed meanwhile (closed, raised or taken by another run): "
                "its quota was not raised"
            )
        added_seats = added if isinstance(added, int) else sum(added.values())
        if actor is not None:  # in the raise's transaction: both or neither
            audit.append(
                session,
                actor,
                "wave.quota.raised",
                wave_id=wave_id,
                before={"quota": old},
                after={"quota": new_quota, "added_seats": added_seats},
            )
        return {
            "old_quota": old,
            "new_quota": new_quota,
            "added_seats": added_seats,
        }
