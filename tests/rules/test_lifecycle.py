"""lifecycle.md's rules, pure: what events mean, deadlines in WIB, dues, revocation and
re-check reasons."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from rules import lifecycle as lc

WIB = timezone(timedelta(hours=7))
D0 = date(2027, 1, 1)
S = lc.LifecycleSettings()


def ev(eid: str, kind: str, course: str, day: int, hour: int = 10, price: int | None = None):
    at = datetime(2027, 1, 1, hour, tzinfo=WIB) + timedelta(days=day)
    if kind == "PURCHASED" and price is None:
        price = 100_000
    return lc.Event(eid, kind, course, price, at)


def view(events, as_of_day: int):
    return lc.training_view(
        events,
        credited=1_000_000,
        deadline_on=lc.deadline(D0, S),
        as_of=D0 + timedelta(days=as_of_day),
    )


def test_the_deadline_is_thirty_wib_days_after_the_credit_and_counts_its_last_minute():
    assert lc.deadline(D0, S) == date(2027, 1, 31)
    late_evening = lc.Event("e", "PURCHASED", "c", 1, datetime(2027, 1, 31, 23, 59, tzinfo=WIB))
    assert view([late_evening], 31).state == lc.LifecycleState.IN_TRAINING
    next_day = lc.Event("e", "PURCHASED", "c", 1, datetime(2027, 2, 1, 0, 1, tzinfo=WIB))
    v = view([next_day], 32)
    assert v.state == lc.LifecycleState.AWAITING_TRAINING and v.late_purchase


def test_a_utc_moment_is_dated_in_wib():
    # 18:30 UTC on Jan 31 is 01:30 WIB on Feb 1
    assert lc.wib_date(datetime(2027, 1, 31, 18, 30)) == date(2027, 2, 1)
    assert lc.wib_date(datetime(2027, 1, 31, 18, 30, tzinfo=UTC)) == date(2027, 2, 1)


def test_a_cancelled_purchase_is_no_purchase_and_its_price_comes_back():
    events = [ev("1", "PURCHASED", "c", 2, price=400_000), ev("2", "CANCELLED", "c", 3)]
    v = view(events, 10)
    assert v.state == lc.LifecycleState.AWAITING_TRAINING
    assert v.balance_left == 1_000_000
    assert lc.first_purchase(events) is None


def test_a_cancellation_that_arrives_first_still_cancels_the_earlier_purchase():
    events = [ev("2", "CANCELLED", "c", 3), ev("1", "PURCHASED", "c", 2)]
    assert lc.first_purchase(events) is None


def test_a_completion_without_a_purchase_is_not_a_completion():
    events = [ev("1", "COMPLETED", "c", 4)]
    v = view(events, 10)
    assert v.state == lc.LifecycleState.AWAITING_TRAINING
    assert v.orphan_completions == 1


def test_events_out_of_order_and_events_after_as_of():
    events = [ev("3", "COMPLETED", "c", 6), ev("1", "PURCHASED", "c", 1)]
    v = view(events, 10)
    assert v.state == lc.LifecycleState.TRAINED
    assert v.first_completion_on == D0 + timedelta(days=6)
    # the completion is after as-of: not yet trained
    assert view(events, 5).state == lc.LifecycleState.IN_TRAINING


def test_installments_fall_due_a_month_apart_from_the_first_completion():
    first = date(2027, 1, 10)
    assert lc.installments_due(first, date(2027, 1, 9), S) == []
    assert lc.installments_due(first, date(2027, 2, 9), S) == [(1, first), (2, date(2027, 2, 9))]
    assert len(lc.installments_due(first, date(2028, 1, 1), S)) == 4
    assert lc.installment_cutoff(date(2027, 2, 9), 2, 30) == first


def test_revocation_reasons():
    deadline = date(2027, 1, 31)
    r = lc.revocation_reason
    assert r("AWAITING_TRAINING", deadline, date(2027, 1, 31), False) is None  # deadline day
    assert r("AWAITING_TRAINING", deadline, date(2027, 2, 1), False) == "NO_TRAINING_IN_TIME"
    assert r("IN_TRAINING", deadline, date(2027, 3, 1), False) is None
    assert r("IN_TRAINING", deadline, date(2027, 1, 5), True) == "BLACKLISTED"
    assert r("TRAINED", deadline, date(2027, 1, 5), True) is None  # stopped by re-checks instead


def test_recheck_reasons_in_order():
    assert lc.recheck_reason(True, ["CIVIL_SERVANT"], True) == "BLACKLISTED"
    assert lc.recheck_reason(False, ["CIVIL_SERVANT", "STUDENT"], True) == "EXCLUDED_CIVIL_SERVANT"
    assert lc.recheck_reason(False, [], True) == "DECEASED"
    assert lc.recheck_reason(False, [], False) is None


def test_keys_and_completion():
    assert lc.idempotency_key(1, "3171014101900001", "incentive", 2) == (
        "w1:3171014101900001:incentive:2"
    )
    assert lc.revoke_key(3, "3171014101900001") == "w3:3171014101900001:training:revoke"
    assert lc.completed({1: "PAID", 2: "FAILED", 3: "PAID", 4: "PAID"}, 4)
    assert not lc.completed({1: "PAID", 2: "STOPPED", 3: "PAID", 4: "PAID"}, 4)
