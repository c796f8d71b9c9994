import hashlib
import random

import pytest

from rules.draw import (
    Candidate,
    SeatWalker,
    backfill_round,
    draw,
    draw_key,
    draw_order_key,
    pool_digest,
    province_of,
    provincial_seats,
    raised_seats,
    seed_sha256,
)

SEED = "wave-1-seed"


def _candidate(number: int, *, kk: str | None = None, province: str = "31", priority=False):
    nik = f"3171010101{number:06d}"
    return Candidate(
        nik=nik,
        kk_number=kk or f"kk{number}",
        province=province,
        priority=priority,
        key=draw_key(SEED, nik),
    )


def _in_draw_order(candidates):
    return sorted(candidates, key=lambda c: draw_order_key(c.priority, c.key))


def test_keys_are_published_sha256_hex():
    assert seed_sha256("abc") == hashlib.sha256(b"abc").hexdigest()
    assert draw_key("abc", "3171010101800001") == (
        hashlib.sha256(b"abc:3171010101800001").hexdigest()
    )
    assert province_of("3171") == "31"


def test_priority_registrants_come_first_then_keys_ascending():
    keys = [(False, "00"), (True, "ff"), (False, "0a"), (True, "01")]
    assert sorted(keys, key=lambda k: draw_order_key(*k)) == [
        (True, "01"),
        (True, "ff"),
        (False, "00"),
        (False, "0a"),
    ]


def test_national_draw_selects_the_quota_in_key_order_and_waitlists_the_rest():
    pool = [_candidate(n) for n in range(10)]
    result = draw(pool, quota=4, allocation="national", household_cap=0, household_counts={})
    assert [nik for nik, _ in result] == [c.nik for c in _in_draw_order(pool)]
    assert [outcome for _, outcome in result] == ["SELECTED"] * 4 + ["WAITLISTED"] * 6


def test_the_draw_does_not_depend_on_input_order():
    pool = [_candidate(n, kk=f"kk{n % 7}", province=("31", "32", "33")[n % 3]) for n in range(60)]
    settings = dict(quota=20, household_cap=2, household_counts={"kk1": 1})
    expected = draw(pool, allocation="provincial", **settings)
    for shuffle_seed in range(5):
        shuffled = pool[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        assert draw(shuffled, allocation="provincial", **settings) == expected


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_the_walk_does_not_depend_on_batch_size(chunk):
    pool = _in_draw_order(_candidate(n, kk=f"kk{n % 5}") for n in range(40))
    expected = draw(pool, quota=15, allocation="national", household_cap=2, household_counts={})
    walker = SeatWalker(seats=15, household_cap=2, household_counts={})
    outcomes = []
    for start in range(0, len(pool), chunk):
        outcomes += [(c.nik, walker.offer(c)) for c in pool[start : start + chunk]]
    assert outcomes == expected


def test_priority_registrants_are_drawn_before_everyone_else():
    pool = [_candidate(n) for n in range(10)] + [_candidate(99, priority=True)]
    result = draw(pool, quota=1, allocation="national", household_cap=0, household_counts={})
    assert result[0] == (_candidate(99).nik, "SELECTED")


@pytest.mark.parametrize(
    ("quota", "pool_counts", "seats"),
    [
        pytest.param(10, {"31": 5, "32": 5}, {"31": 5, "32": 5}, id="even split"),
        pytest.param(10, {"31": 7, "32": 2, "33": 1}, {"31": 7, "32": 2, "33": 1}, id="exact"),
        # 10*3/7 = 4.29, 10*2/7 = 2.86 (largest remainder), 10*2/7 = 2.86: 4+2+2 = 8, two
        # seats left go to 32 and 33 (equal remainders 6 > 2).
        pytest.param(10, {"31": 3, "32": 2, "33": 2}, {"31": 4, "32": 3, "33": 3}, id="remainders"),
        # Equal remainders, one seat left: the lower province code gets it.
        pytest.param(1, {"52": 1, "51": 1}, {"51": 1, "52": 0}, id="tie to lower code"),
        pytest.param(3, {"31": 4, "32": 0}, {"31": 3, "32": 0}, id="empty province"),
        pytest.param(5, {}, {}, id="empty pool"),
    ],
)
def test_provincial_seats_by_largest_remainder(quota, pool_counts, seats):
    assert provincial_seats(quota, pool_counts) == seats


@pytest.mark.parametrize("quota", range(0, 40))
def test_provincial_seats_add_up_to_the_quota(quota):
    assert sum(provincial_seats(quota, {"11": 7, "31": 11, "52": 3, "94": 1}).values()) == quota


def test_provincial_draw_fills_each_province_separately():
    pool = [_candidate(n, province="31") for n in range(6)]
    pool += [_candidate(100 + n, province="32") for n in range(2)]
    result = dict(
        draw(pool, quota=4, allocation="provincial", household_cap=0, household_counts={})
    )
    selected = [nik for nik, outcome in result.items() if outcome == "SELECTED"]
    assert sum(nik in {c.nik for c in pool[:6]} for nik in selected) == 3
    assert sum(nik in {c.nik for c in pool[6:]} for nik in selected) == 1


def test_household_cap_counts_participants_from_earlier_waves():
    family = [_candidate(n, kk="kk-shared") for n in range(3)]
    result = draw(
        family, quota=3, allocation="national", household_cap=2, household_counts={"kk-shared": 1}
    )
    assert [outcome for _, outcome in result] == ["SELECTED", "HOUSEHOLD_CAP", "HOUSEHOLD_CAP"]


def test_household_cap_zero_turns_the_cap_off():
    family = [_candidate(n, kk="kk-shared") for n in range(3)]
    result = draw(
        family, quota=3, allocation="national", household_cap=0, household_counts={"kk-shared": 5}
    )
    assert [outcome for _, outcome in result] == ["SELECTED"] * 3


def test_household_cap_applies_only_when_a_seat_is_offered():
    family = _in_draw_order(_candidate(n, kk="kk-shared") for n in range(4))
    result = draw(family, quota=2, allocation="national", household_cap=2, household_counts={})
    assert [outcome for _, outcome in result] == [
        "SELECTED",
        "SELECTED",
        "WAITLISTED",
        "WAITLISTED",
    ]


def test_a_capped_registrant_does_not_take_a_seat():
    pool = _in_draw_order([_candidate(1, kk="full"), _candidate(2), _candidate(3)])
    result = draw(
        pool, quota=2, allocation="national", household_cap=1, household_counts={"full": 1}
    )
    outcomes = dict(result)
    assert outcomes[_candidate(1).nik] == "HOUSEHOLD_CAP"
    assert sorted(outcomes.values()) == ["HOUSEHOLD_CAP", "SELECTED", "SELECTED"]


def test_walker_does_not_change_the_callers_household_counts():
    counts = {"kk1": 0}
    walker = SeatWalker(seats=1, household_cap=2, household_counts=counts)
    assert walker.offer(_candidate(1, kk="kk1")) == "SELECTED"
    assert counts == {"kk1": 0}


def test_walker_is_full_once_every_seat_is_taken():
    walker = SeatWalker(seats={"31": 1, "32": 1}, household_cap=0, household_counts={})
    assert walker.offer(_candidate(1, province="31")) == "SELECTED"
    assert not walker.full
    assert walker.offer(_candidate(2, province="31")) == "WAITLISTED"
    assert walker.offer(_candidate(3, province="32")) == "SELECTED"
    assert walker.full
    assert walker.selected_count == 2
    assert walker.offer(_candidate(4, province="32")) == "WAITLISTED"


def test_backfill_fills_freed_seats_from_the_waitlist_in_order():
    waitlist = _in_draw_order(_candidate(n) for n in range(5))
    decided = backfill_round(free_seats=2, waitlist=waitlist, household_cap=0, household_counts={})
    assert decided == [(waitlist[0].nik, "SELECTED"), (waitlist[1].nik, "SELECTED")]


def test_backfill_passes_over_a_full_family_card_and_keeps_offering():
    waitlist = [_candidate(1, kk="full"), _candidate(2), _candidate(3), _candidate(4, kk="full")]
    decided = backfill_round(
        free_seats=2, waitlist=waitlist, household_cap=2, household_counts={"full": 2}
    )
    assert decided == [
        (waitlist[0].nik, "HOUSEHOLD_CAP"),
        (waitlist[1].nik, "SELECTED"),
        (waitlist[2].nik, "SELECTED"),
    ]


def test_backfill_does_not_cap_anyone_when_no_seat_is_free():
    waitlist = [_candidate(1, kk="full")]
    decided = backfill_round(
        free_seats=0, waitlist=waitlist, household_cap=1, household_counts={"full": 1}
    )
    assert decided == []


def test_backfill_does_not_move_a_seat_to_another_province():
    waitlist = [
        _candidate(1, province="32"),
        _candidate(2, province="31"),
        _candidate(3, province="31"),
    ]
    decided = backfill_round(
        free_seats={"31": 1, "32": 0}, waitlist=waitlist, household_cap=0, household_counts={}
    )
    assert decided == [(waitlist[1].nik, "SELECTED")]


def test_backfill_counts_its_own_selections_against_the_cap():
    waitlist = [_candidate(n, kk="kk-shared") for n in range(3)]
    decided = backfill_round(free_seats=3, waitlist=waitlist, household_cap=2, household_counts={})
    assert [outcome for _, outcome in decided] == ["SELECTED", "SELECTED", "HOUSEHOLD_CAP"]


def test_backfill_stops_reading_the_waitlist_once_seats_are_filled():
    read = []

    def waitlist():
        for n in range(100):
            read.append(n)
            yield _candidate(n)

    backfill_round(free_seats=2, waitlist=waitlist(), household_cap=0, household_counts={})
    assert len(read) <= 3


def test_a_national_quota_raise_opens_the_difference():
    assert raised_seats(old_quota=164, new_quota=200, allocation="national", pool_counts={}) == 36


def test_a_provincial_quota_raise_opens_each_provinces_growth():
    pool_counts = {"31": 3, "32": 2, "33": 2}
    # 7 seats: 3/2/2; 10 seats: 4/3/3.
    assert raised_seats(
        old_quota=7, new_quota=10, allocation="provincial", pool_counts=pool_counts
    ) == {"31": 1, "32": 1, "33": 1}


def test_a_quota_raise_then_selects_more_from_the_waitlist_in_the_same_order():
    pool = [_candidate(n) for n in range(10)]
    before = draw(pool, quota=3, allocation="national", household_cap=0, household_counts={})
    waitlist = [c for c in _in_draw_order(pool) if dict(before)[c.nik] == "WAITLISTED"]
    extra = raised_seats(old_quota=3, new_quota=5, allocation="national", pool_counts={})
    decided = backfill_round(
        free_seats=extra, waitlist=waitlist, household_cap=0, household_counts={}
    )
    after = draw(pool, quota=5, allocation="national", household_cap=0, household_counts={})
    selected_after = [nik for nik, outcome in after if outcome == "SELECTED"]
    selected_before = [nik for nik, outcome in before if outcome == "SELECTED"]
    assert selected_before + [nik for nik, _ in decided] == selected_after


def test_a_quota_cannot_be_lowered():
    with pytest.raises(ValueError):
        raised_seats(old_quota=10, new_quota=9, allocation="national", pool_counts={})


def test_pool_digest_is_sha256_of_keys_joined_by_newlines():
    keys = ["aa", "bb", "cc"]
    assert pool_digest(iter(keys)) == hashlib.sha256(b"aa\nbb\ncc").hexdigest()
    assert pool_digest([]) == hashlib.sha256(b"").hexdigest()
