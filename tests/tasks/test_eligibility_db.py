"""The set-based local checks in the database decide exactly like the rules, in order."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date, datetime

from sqlalchemy import insert, select

from models.tables import BlacklistEntry, Registrant
from rules.eligibility import local_eligibility_reason
from tasks.eligibility import check_local_eligibility_batch
from tests.tasks.factories import make_wave

REF = date(2028, 2, 29)
BIRTHS = [
    date(2010, 2, 28),
    date(2010, 3, 1),
    date(2010, 2, 27),
    date(2008, 2, 29),
    date(1990, 6, 1),
    date(2012, 2, 29),
]
SCORES = [59, 60, 100]


def test_local_checks_in_sql_agree_with_the_rules_for_every_combination(sessions):
    make_wave(sessions, wave_id=1)
    make_wave(sessions, wave_id=2, reference_date=REF)
    cases = list(itertools.product(BIRTHS, SCORES, [False, True], [False, True]))
    rows, past = [], []
    for i, (born, score, prior, _listed) in enumerate(cases):
        nik = f"31710101{i:08d}"
        rows.append(
            {
                "wave_id": 2,
                "line": i + 2,
                "nik": nik,
                "birth_date": born,
                "test_score": score,
                "state": "AWAIT_LOCAL",
            }
        )
        if prior:
            # A participant was drawn: draw_round is set (0 = the draw itself).
            past.append(
                {"wave_id": 1, "line": i + 2, "nik": nik, "state": "CREDITED", "draw_round": 0}
            )
    with sessions() as session, session.begin():
        session.connection().execute(insert(Registrant.__table__), rows)
        session.connection().execute(insert(Registrant.__table__), past)
        for i, case in enumerate(cases):
            if case[3]:
                session.add(
                    BlacklistEntry(
                        nik=f"31710101{i:08d}",
                        reason="fraud",
                        added_by="test",
                        added_at=datetime(2026, 1, 1),
                    )
                )
    with sessions() as session:
        ids = [
            r
            for r in session.execute(select(Registrant.id).where(Registrant.wave_id == 2)).scalars()
        ]
    counts = check_local_eligibility_batch(sessions, 2, (min(ids), max(ids)))
    with sessions() as session:
        got = {
            line: (state, reason)
            for line, state, reason in session.execute(
                select(Registrant.line, Registrant.state, Registrant.reason).where(
                    Registrant.wave_id == 2
                )
            )
        }
    tally: Counter = Counter()
    for i, (born, score, prior, listed) in enumerate(cases):
        want = local_eligibility_reason(
            birth_date=born,
            test_score=score,
            reference_date=REF,
            min_age=18,
            min_test_score=60,
            prior_recipient=prior,
            blacklisted=listed,
        )
        expected = ("AWAIT_IDENTITY", None) if want is None else ("REJECTED", want.value)
        assert got[i + 2] == expected, (born, score, prior, listed)
        tally[want.value if want else "passed"] += 1
    # The counts the stage reports (and the wave summary adds up) match the outcomes.
    assert counts == dict(tally) and len(tally) == 5
