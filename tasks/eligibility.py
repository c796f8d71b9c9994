"""Local eligibility: age, test score, earlier waves and the revocation list; no partner."""

from __future__ import annotations

from sqlalchemy import select

from models.db import SessionFactory
from models.enums import State
from models.tables import BlacklistEntry
from rules.eligibility import local_eligibility_reason
from tasks.common import R, bulk_update, load_wave, rows_in_range, utcnow

# "Earlier wave" means a lower wave number: waves are numbered in the order they run.
PAST_PARTICIPANT_STATES = (State.CONFIRMED.value, State.CREDITED.value)


def check_local_eligibility_batch(
    sessions: SessionFactory, wave_id: int, id_range: tuple[int, int]
) -> dict[str, int]:
    """Decides a batch of intake-accepted registrants; returns counts by result."""
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        rows = rows_in_range(
            session,
            wave_id,
            [State.AWAIT_LOCAL],
            id_range,
            [R.c.id, R.c.nik, R.c.birth_date, R.c.test_score],
        )
        if not rows:
            return {}
        niks = [r.nik for r in rows]
        prior = set(
            session.execute(
                select(R.c.nik).where(
                    R.c.nik.in_(niks),
                    R.c.wave_id < wave_id,
                    R.c.state.in_(PAST_PARTICIPANT_STATES),
                )
            ).scalars()
        )
        blacklisted = set(
            session.execute(
                select(BlacklistEntry.nik).where(BlacklistEntry.nik.in_(niks))  # type: ignore[attr-defined]
            ).scalars()
        )
        now = utcnow()
        counts: dict[str, int] = {}
        changes = []
        for r in rows:
            reason = local_eligibility_reason(
                birth_date=r.birth_date,
                test_score=r.test_score,
                reference_date=wave.reference_date,
                min_age=wave.min_age,
                min_test_score=wave.min_test_score,
                prior_recipient=r.nik in prior,
                blacklisted=r.nik in blacklisted,
            )
            if reason is None:
                changes.append({"_id": r.id, "state": State.AWAIT_IDENTITY.value})
                counts["passed"] = counts.get("passed", 0) + 1
            else:
                changes.append(
                    {
                        "_id": r.id,
                        "state": State.REJECTED.value,
                        "reason": str(reason),
                        "decided_at": now,
                    }
                )
                counts[str(reason)] = counts.get(str(reason), 0) + 1
        bulk_update(session, changes, expect_state=[State.AWAIT_LOCAL.value])
        return counts
