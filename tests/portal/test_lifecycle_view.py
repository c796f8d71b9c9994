"""What the dashboard makes of a participant's recorded life (portal/lifecycle.py, pure):
each payment's shown state, the surveys' states, and the survey answers' validation."""

from __future__ import annotations

from datetime import date, datetime
from types import SimpleNamespace as Row

import pytest

from portal import lifecycle

WAVE = Row(
    training_balance=1_000_000,
    first_training_days=30,
    incentive_amount=600_000,
    incentive_installments=4,
    incentive_interval_days=30,
    survey_amount=50_000,
    surveys=3,
)
ENTRY = lifecycle.Credited(7, 1, datetime(2020, 4, 21, 16, 10), WAVE, None)  # 23:10 WIB
TODAY = date(2020, 7, 1)


def participant(state="TRAINED", reason=None, completion=date(2020, 5, 26)):
    return Row(
        state=state,
        reason=reason,
        deadline_on=date(2020, 5, 21),
        balance_left=650_000,
        first_completion_on=completion,
    )


def pay(benefit, k, status, reason=None, due=date(2020, 5, 26)):
    return Row(
        benefit=benefit,
        installment=k,
        amount=600_000 if benefit == "incentive" else 50_000,
        due_on=due,
        status=status,
        reason=reason,
        updated_at=datetime(2020, 5, 25, 19, 14),
        run_as_of=date(2020, 5, 26),
    )


def test_credited_before_any_payout_run_is_awaiting_with_its_deadline():
    got = lifecycle.build(ENTRY, WAVE, None, [], {}, TODAY)
    assert got == {
        "state": "AWAITING_TRAINING",
        "reason": "",
        "training_deadline": "2020-05-21",
        "balance_left": 1_000_000,
        "payments": [],
        "surveys": [{"survey": k, "status": "LOCKED"} for k in (1, 2, 3)],
    }


def test_a_trained_participant_sees_paid_due_and_scheduled_installments_and_an_open_survey():
    rows = [pay("incentive", 1, "PAID"), pay("incentive", 2, "SENDING", due=date(2020, 6, 25))]
    got = lifecycle.build(ENTRY, WAVE, participant(), rows, {}, TODAY)
    assert got["state"] == "TRAINED" and got["balance_left"] == 650_000
    assert got["payments"] == [
        {"benefit": "incentive", "installment": 1, "amount": 600_000, "due": "2020-05-26",
         "status": "PAID", "paid_at": "2020-05-26T02:14:00+07:00"},
        {"benefit": "incentive", "installment": 2, "amount": 600_000, "due": "2020-06-25",
         "status": "DUE"},
        {"benefit": "incentive", "installment": 3, "amount": 600_000, "due": "2020-07-25",
         "status": "SCHEDULED"},
        {"benefit": "incentive", "installment": 4, "amount": 600_000, "due": "2020-08-24",
         "status": "SCHEDULED"},
    ]  # fmt: skip
    assert [s["status"] for s in got["surveys"]] == ["OPEN", "LOCKED", "LOCKED"]


def test_a_due_date_passed_without_a_ledger_row_yet_is_due_not_scheduled():
    got = lifecycle.build(ENTRY, WAVE, participant(), [], {}, date(2020, 6, 25))
    assert [p["status"] for p in got["payments"]] == ["DUE", "DUE", "SCHEDULED", "SCHEDULED"]


def test_stopped_failed_and_conflict():
    rows = [
        pay("incentive", 1, "PAID"),
        pay("incentive", 2, "FAILED", "ACCOUNT_CLOSED"),
        pay("incentive", 3, "STOPPED", "EXCLUDED_CIVIL_SERVANT"),
    ]
    got = lifecycle.build(
        ENTRY, WAVE, participant("STOPPED", "EXCLUDED_CIVIL_SERVANT"), rows, {}, TODAY
    )
    shown = [(p["status"], p.get("reason")) for p in got["payments"]]
    assert shown == [
        ("PAID", None),
        ("FAILED", "ACCOUNT_CLOSED"),
        ("STOPPED", "EXCLUDED_CIVIL_SERVANT"),
        ("STOPPED", "EXCLUDED_CIVIL_SERVANT"),  # no row yet: nothing more is paid
    ]
    # A stopped participant is paid nothing more: no survey opens.
    assert [s["status"] for s in got["surveys"]] == ["LOCKED"] * 3
    conflict = lifecycle.build(
        ENTRY, WAVE, participant(), [pay("incentive", 1, "CONFLICT")], {}, TODAY
    )
    assert conflict["payments"][0]["status"] == "DUE"  # possibly paid: never sent again


def test_a_revoked_participant_has_no_payments():
    got = lifecycle.build(
        ENTRY, WAVE, participant("REVOKED", "NO_TRAINING_IN_TIME", None), [], {}, TODAY
    )
    assert got["state"] == "REVOKED" and got["reason"] == "NO_TRAINING_IN_TIME"
    assert got["payments"] == [] and {s["status"] for s in got["surveys"]} == {"LOCKED"}


def test_a_survey_answered_is_due_until_paid_then_paid():
    answered = {1: datetime(2020, 6, 1, 3, 0)}
    rows = [pay("incentive", 1, "PAID")]
    got = lifecycle.build(ENTRY, WAVE, participant(), rows, answered, TODAY)
    assert got["surveys"][0] == {"survey": 1, "status": "ANSWERED"}
    assert got["payments"][-1] == {
        "benefit": "survey", "installment": 1, "amount": 50_000, "due": "2020-06-01",
        "status": "DUE",
    }  # fmt: skip
    rows.append(pay("survey", 1, "PAID", due=date(2020, 6, 5)))
    got = lifecycle.build(ENTRY, WAVE, participant(), rows, answered, TODAY)
    assert got["surveys"][0] == {"survey": 1, "status": "PAID"}
    assert got["payments"][-1]["status"] == "PAID" and got["payments"][-1]["due"] == "2020-06-05"


GOOD = {
    "work_status": "employed",
    "training_helped": 4,
    "field": "digital",
    "applied_for_job": True,
    "recommend": False,
    "comment": "Bagus <b>sekali</b>",
}


def test_valid_answers_are_kept_as_given():
    assert lifecycle.validate_answers(GOOD) == GOOD
    without = {k: v for k, v in GOOD.items() if k != "comment"}
    assert lifecycle.validate_answers(without) == {**without, "comment": ""}


@pytest.mark.parametrize(
    "change",
    [
        {"work_status": "retired"},
        {"training_helped": 6},
        {"training_helped": 0},
        {"training_helped": True},  # a bool is not a score
        {"training_helped": "4"},
        {"field": "Digital"},
        {"applied_for_job": 1},  # nor is a number a yes
        {"recommend": "true"},
        {"comment": "x" * 501},
        {"comment": 5},
        {"extra": "field"},
        {"work_status": None},
    ],
)
def test_a_value_outside_its_choices_is_refused(change):
    assert lifecycle.validate_answers({**GOOD, **change}) is None


def test_a_missing_answer_or_a_body_that_is_not_an_object_is_refused():
    for name in lifecycle.CHOICES:
        assert lifecycle.validate_answers({k: v for k, v in GOOD.items() if k != name}) is None
    assert lifecycle.validate_answers(["employed"]) is None
    assert lifecycle.validate_answers(None) is None
    assert lifecycle.validate_answers({**GOOD, "comment": "x" * 500}) is not None


def test_the_page_form_becomes_the_same_body():
    form = {
        "work_status": "employed",
        "training_helped": "4",
        "field": "digital",
        "applied_for_job": "true",
        "recommend": "false",
        "comment": "Bagus <b>sekali</b>",
    }
    assert lifecycle.validate_answers(lifecycle.answers_from_form(form)) == GOOD
    assert (
        lifecycle.validate_answers(lifecycle.answers_from_form({**form, "recommend": ""})) is None
    )


def test_a_payment_of_a_run_for_a_date_ahead_reads_as_paid_on_that_date():
    assert lifecycle.paid_at(datetime(2020, 5, 25, 19, 14), date(2020, 5, 26)) == (
        "2020-05-26T02:14:00+07:00"
    )
    # A rehearsal run months ahead (the demo): the run's date, the same time of day.
    assert lifecycle.paid_at(datetime(2020, 5, 25, 19, 14), date(2020, 9, 1)) == (
        "2020-09-01T02:14:00+07:00"
    )
    assert lifecycle.paid_at(datetime(2020, 5, 25, 19, 14), None) == "2020-05-26T02:14:00+07:00"
