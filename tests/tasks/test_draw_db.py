"""The draw in the database agrees with the rules' reference draw; backfill and raises."""

from __future__ import annotations

import random

from sqlalchemy import insert, select

from models.enums import State
from models.tables import Registrant
from rules.draw import Candidate, draw, draw_key
from tasks.draw import draw_participants, fill_free_seats, raise_quota
from tests.tasks.factories import make_wave

SEED = "seed"


def _eligible(
    sessions,
    wave_id: int,
    people: list[tuple[str, str, str, bool]],
    state="ELIGIBLE",
    start_line: int = 2,
):
    rows = []
    for i, (nik, kk, province, priority) in enumerate(people):
        rows.append(
            {
                "wave_id": wave_id,
                "line": start_line + i,
                "nik": nik,
                "kk_number": kk,
                "province": province,
                "priority": priority,
                "state": state,
                "draw_key": draw_key(SEED, nik),
                "phone": "+6281200000000",
                "payout_provider": "wallet-a",
                "payout_account": "1",
            }
        )
    with sessions() as session, session.begin():
        session.connection().execute(insert(Registrant.__table__), rows)


def _states(sessions, wave_id=1) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        return {
            nik: (state, reason)
            for nik, state, reason in session.execute(
                select(Registrant.nik, Registrant.state, Registrant.reason).where(
                    Registrant.wave_id == wave_id
                )
            )
        }


def _people(n: int, rng: random.Random, provinces=("31", "32", "33")):
    out = []
    for i in range(n):
        nik = f"{rng.choice(provinces)}{rng.randrange(10**13):013d}{i % 10}"
        kk = f"kk{rng.randrange(n // 2)}"
        out.append((nik, kk, nik[:2], rng.random() < 0.1))
    return out


def test_database_draw_matches_the_reference_draw(sessions):
    rng = random.Random(7)
    people = _people(400, rng)
    make_wave(sessions, quota=60, lottery_seed=SEED)
    _eligible(sessions, 1, people)
    result = draw_participants(sessions, 1)
    assert result["drawn"] and result["pool_size"] == 400
    reference = draw(
        [Candidate(n, k, p, pr, draw_key(SEED, n)) for n, k, p, pr in people],
        quota=60,
        allocation="national",
        household_cap=2,
        household_counts={},
    )
    states = _states(sessions)
    for nik, outcome in reference:
        want = {
            "SELECTED": ("SELECTED", None),
            "HOUSEHOLD_CAP": ("NOT_SELECTED", "HOUSEHOLD_CAP"),
            "WAITLISTED": ("WAITLISTED", None),
        }[outcome]
        assert states[nik] == want
    assert sum(1 for s, _ in states.values() if s == "SELECTED") == 60


def test_provincial_draw_gives_each_province_its_largest_remainder_seats(sessions):
    rng = random.Random(3)
    people = _people(300, rng, provinces=("11", "31", "32", "33", "51"))
    make_wave(sessions, quota=37, lottery_seed=SEED, allocation="provincial", household_cap=0)
    _eligible(sessions, 1, people)
    draw_participants(sessions, 1)
    reference = dict(
        draw(
            [Candidate(n, k, p, pr, draw_key(SEED, n)) for n, k, p, pr in people],
            quota=37,
            allocation="provincial",
            household_cap=0,
            household_counts={},
        )
    )
    states = _states(sessions)
    assert {n for n, o in reference.items() if o == "SELECTED"} == {
        n for n, (s, _) in states.items() if s == "SELECTED"
    }


def test_draw_waits_for_pending_registrants_unless_told_otherwise(sessions):
    make_wave(sessions, quota=2, lottery_seed=SEED)
    _eligible(sessions, 1, [("3100000000000001", "k1", "31", False)])
    _eligible(
        sessions,
        1,
        [("3100000000000002", "k2", "31", False)],
        state=State.AWAIT_SCREENING.value,
        start_line=3,
    )
    held = draw_participants(sessions, 1)
    assert held == {"drawn": False, "held_by_pending": 1}
    assert _states(sessions)["3100000000000001"][0] == "ELIGIBLE"
    drawn = draw_participants(sessions, 1, without_pending=True)
    assert drawn["drawn"] and drawn["without_pending"] == 1


def test_household_cap_counts_participants_of_earlier_waves(sessions):
    make_wave(sessions, wave_id=1, quota=5, lottery_seed=SEED)
    make_wave(sessions, wave_id=2, quota=5, lottery_seed=SEED)
    _eligible(
        sessions,
        1,
        [("3100000000000011", "family", "31", False), ("3100000000000012", "family", "31", False)],
        state=State.CREDITED.value,
    )
    _eligible(
        sessions,
        2,
        [("3100000000000013", "family", "31", False), ("3100000000000014", "other", "31", False)],
    )
    draw_participants(sessions, 2)
    states = _states(sessions, wave_id=2)
    assert states["3100000000000013"] == ("NOT_SELECTED", "HOUSEHOLD_CAP")
    assert states["3100000000000014"] == ("SELECTED", None)


def _fail_accounts(sessions, niks, reason="ACCOUNT_NOT_FOUND"):
    from sqlalchemy import update

    with sessions() as session, session.begin():
        session.execute(
            update(Registrant)
            .where(Registrant.nik.in_(niks))
            .values(state="REJECTED", reason=reason)
        )


def _confirm(sessions, niks):
    from sqlalchemy import update

    with sessions() as session, session.begin():
        session.execute(
            update(Registrant).where(Registrant.nik.in_(niks)).values(state="CONFIRMED")
        )


def test_backfill_fills_seats_freed_by_failed_accounts_in_draw_order(sessions):
    rng = random.Random(11)
    people = [(p[0], f"kk{i}", p[2], False) for i, p in enumerate(_people(30, rng))]
    make_wave(sessions, quota=5, lottery_seed=SEED)
    _eligible(sessions, 1, people)
    draw_participants(sessions, 1)
    order = sorted(people, key=lambda p: draw_key(SEED, p[0]))
    selected = [p[0] for p in order[:5]]
    assert fill_free_seats(sessions, 1)["reason"] == "held: payout accounts pending"
    _fail_accounts(sessions, selected[:2])
    _confirm(sessions, selected[2:])
    result = fill_free_seats(sessions, 1)
    assert result["selected"] == 2 and result["round"] == 1
    states = _states(sessions)
    assert [states[p[0]][0] for p in order[5:8]] == ["SELECTED", "SELECTED", "WAITLISTED"]


def test_no_backfill_keeps_failed_seats_empty(sessions):
    rng = random.Random(5)
    people = [(p[0], f"kk{i}", p[2], False) for i, p in enumerate(_people(10, rng))]
    make_wave(sessions, quota=3, lottery_seed=SEED, backfill=False)
    _eligible(sessions, 1, people)
    draw_participants(sessions, 1)
    order = sorted(people, key=lambda p: draw_key(SEED, p[0]))
    _fail_accounts(sessions, [order[0][0]])
    _confirm(sessions, [order[1][0], order[2][0]])
    assert fill_free_seats(sessions, 1)["selected"] == 0


def test_raising_the_quota_selects_more_from_the_waitlist_in_order(sessions):
    rng = random.Random(9)
    people = [(p[0], f"kk{i}", p[2], False) for i, p in enumerate(_people(20, rng))]
    make_wave(sessions, quota=4, lottery_seed=SEED)
    _eligible(sessions, 1, people)
    draw_participants(sessions, 1)
    order = sorted(people, key=lambda p: draw_key(SEED, p[0]))
    _confirm(sessions, [p[0] for p in order[:4]])
    assert raise_quota(sessions, 1, 7)["added_seats"] == 3
    assert fill_free_seats(sessions, 1)["selected"] == 3
    states = _states(sessions)
    assert [states[p[0]][0] for p in order[4:8]] == ["SELECTED"] * 3 + ["WAITLISTED"]


def test_raising_a_provincial_quota_gives_each_province_its_growth(sessions):
    import json

    from models.tables import Wave

    rng = random.Random(11)
    people = [(p[0], f"kk{i}", p[2], False) for i, p in enumerate(_people(30, rng))]
    make_wave(sessions, quota=6, lottery_seed=SEED, allocation="provincial", household_cap=0)
    _eligible(sessions, 1, people)
    draw_participants(sessions, 1)
    with sessions() as session:
        before = json.loads(session.get(Wave, 1).seats_json)["seats"]
    assert sum(before.values()) == 6

    assert raise_quota(sessions, 1, 12)["added_seats"] == 6
    with sessions() as session:
        after = json.loads(session.get(Wave, 1).seats_json)["seats"]
    assert sum(after.values()) == 12
    assert all(after[p] >= before.get(p, 0) for p in after)


def test_a_quota_cannot_be_lowered_or_raised_on_a_closed_wave(sessions):
    import pytest
    from sqlalchemy import update

    from models.tables import Wave
    from tasks.draw import QuotaError

    make_wave(sessions, quota=4)
    with pytest.raises(QuotaError, match="only be raised"):
        raise_quota(sessions, 1, 3)
    with sessions() as session, session.begin():
        session.execute(update(Wave).values(status="CLOSED"))
    with pytest.raises(QuotaError, match="closed"):
        raise_quota(sessions, 1, 10)


def test_a_waitlist_read_page_by_page_keeps_the_draw_order(sessions):
    # Backfill rounds read the waitlist in pages (each twice the last) past the last
    # (priority, key) seen; every page boundary, priority ones first, must lose nobody.
    from tasks.draw import _candidates

    rng = random.Random(13)
    people = _people(257, rng)
    make_wave(sessions, quota=10, lottery_seed=SEED)
    _eligible(sessions, 1, people, state="WAITLISTED")
    with sessions() as session:
        whole = [rid for rid, _ in _candidates(session, 1, "WAITLISTED")]
        for first_page in (1, 3, 64, 500):
            paged = [rid for rid, _ in _candidates(session, 1, "WAITLISTED", first_page=first_page)]
            assert paged == whole
    keys = [(not pr, draw_key(SEED, n)) for n, _, _, pr in people]
    assert len(whole) == 257 and any(pr for *_, pr in people)
    with sessions() as session:
        order = dict(session.execute(select(Registrant.id, Registrant.draw_key)).all())
    assert [order[rid] for rid in whole] == [k for _, k in sorted(keys)]


def test_a_backfill_deep_in_a_provincial_waitlist_reads_past_its_first_page(sessions):
    # One free seat in a province whose waitlisted members all come after 1,500 priority
    # ones of another: the round reads on past its first page of 1,000 until it finds them.
    rng = random.Random(17)
    many = [(f"31{rng.randrange(10**13):013d}{i % 10}", f"kk{i}", "31", True) for i in range(1500)]
    rare = [(f"51{rng.randrange(10**13):013d}{i}", f"kk-rare{i}", "51", False) for i in range(3)]
    make_wave(sessions, quota=1, lottery_seed=SEED, allocation="provincial", household_cap=0)
    _eligible(sessions, 1, many + rare)
    draw_participants(sessions, 1)
    states = _states(sessions)
    (drawn,) = [n for n, (s, _) in states.items() if s == "SELECTED"]
    assert drawn.startswith("31")
    _confirm(sessions, [drawn])
    from sqlalchemy import update

    from models.tables import Wave

    with sessions() as session, session.begin():
        # A seat more, for province 51 only, as a quota raise could leave it.
        session.execute(
            update(Wave).where(Wave.wave_id == 1).values(seats_json='{"seats": {"31": 1, "51": 1}}')
        )
    assert fill_free_seats(sessions, 1)["selected"] == 1
    states = _states(sessions)
    first_rare = min(rare, key=lambda p: draw_key(SEED, p[0]))[0]
    assert states[first_rare] == ("SELECTED", None)
    assert [n for n, (s, _) in states.items() if s == "SELECTED"] == [first_rare]
