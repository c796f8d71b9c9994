from datetime import date

import pytest

from models.enums import ReasonCode
from rules.eligibility import (
    ACCOUNT_STATUSES,
    ScreeningDecision,
    account_reason,
    age_on,
    excluded_reason,
    identity_reason,
    local_eligibility_reason,
    screening_decision,
)

REFERENCE = date(2020, 4, 11)


@pytest.mark.parametrize(
    ("birth_date", "reference", "age"),
    [
        (date(2002, 4, 11), REFERENCE, 18),
        (date(2002, 4, 12), REFERENCE, 17),
        (date(2000, 2, 29), date(2018, 2, 28), 17),
        (date(2000, 2, 29), date(2018, 3, 1), 18),
        (date(2000, 2, 29), date(2020, 2, 29), 20),
    ],
)
def test_age_is_completed_years(birth_date, reference, age):
    assert age_on(birth_date, reference) == age


def _local(**overrides):
    arguments = dict(
        birth_date=date(1990, 1, 1),
        test_score=75,
        reference_date=REFERENCE,
        min_age=18,
        min_test_score=60,
        prior_recipient=False,
        blacklisted=False,
    )
    arguments.update(overrides)
    return local_eligibility_reason(**arguments)


def test_a_registrant_meeting_every_local_rule_goes_on():
    assert _local() is None


def test_turning_min_age_on_the_reference_date_is_old_enough():
    assert _local(birth_date=date(2002, 4, 11)) is None


def test_turning_min_age_the_day_after_the_reference_date_is_underage():
    assert _local(birth_date=date(2002, 4, 12)) == ReasonCode.UNDERAGE


def test_a_score_equal_to_the_pass_mark_passes():
    assert _local(test_score=60) is None
    assert _local(test_score=59) == ReasonCode.TEST_FAILED


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (dict(birth_date=date(2010, 1, 1), test_score=10, blacklisted=True), "UNDERAGE"),
        (dict(test_score=10, prior_recipient=True, blacklisted=True), "TEST_FAILED"),
        (dict(prior_recipient=True, blacklisted=True), "PRIOR_RECIPIENT"),
        (dict(blacklisted=True), "BLACKLISTED"),
    ],
)
def test_local_checks_report_the_first_failure(overrides, reason):
    assert _local(**overrides) == ReasonCode(reason)


def _identity(**overrides):
    arguments = dict(
        found=True,
        deceased=False,
        name_score=95,
        birth_date_match=True,
        kk_match=True,
        name_score_min=80,
    )
    arguments.update(overrides)
    return identity_reason(**arguments)


def test_a_matching_registry_record_verifies_the_identity():
    assert _identity() is None


def test_a_name_score_equal_to_the_minimum_is_accepted():
    assert _identity(name_score=80) is None
    assert _identity(name_score=79) == ReasonCode.NAME_MISMATCH


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            dict(found=False, deceased=None, name_score=None, birth_date_match=None, kk_match=None),
            "NIK_NOT_FOUND",
        ),
        (dict(deceased=True, birth_date_match=False, name_score=0, kk_match=False), "DECEASED"),
        (dict(birth_date_match=False, name_score=0, kk_match=False), "BIRTH_DATE_MISMATCH"),
        (dict(name_score=0, kk_match=False), "NAME_MISMATCH"),
        (dict(kk_match=False), "KK_MISMATCH"),
    ],
)
def test_identity_checks_report_the_first_failure(overrides, reason):
    assert _identity(**overrides) == ReasonCode(reason)


def test_a_found_record_missing_a_result_cannot_be_judged():
    with pytest.raises(ValueError):
        _identity(kk_match=None)


@pytest.mark.parametrize(
    ("category", "reason"),
    [
        ("civil_servant", ReasonCode.EXCLUDED_CIVIL_SERVANT),
        ("SOCIAL_AID", ReasonCode.EXCLUDED_SOCIAL_AID),
        ("soe-board", ReasonCode.EXCLUDED_SOE_BOARD),
    ],
)
def test_excluded_reason_uses_the_known_reason_code(category, reason):
    assert excluded_reason(category) is reason


def test_excluded_reason_of_a_new_category_is_a_plain_code():
    assert excluded_reason("pension_fund") == "EXCLUDED_PENSION_FUND"


AGENCIES = [
    ("bkn", "civil_servant", "exclude"),
    ("kemnaker", "laid_off", "prioritize"),
    ("kemensos", "social_aid", "exclude"),
]


def test_screening_waits_on_the_first_agency_without_an_answer():
    assert screening_decision(AGENCIES, {"bkn": False}) == ScreeningDecision(
        done=False, reason=None, priority=False, waiting_on="kemnaker"
    )


def test_an_exclusion_decides_even_when_later_agencies_have_not_answered():
    decision = screening_decision(AGENCIES, {"bkn": True})
    assert decision == ScreeningDecision(
        done=True, reason=ReasonCode.EXCLUDED_CIVIL_SERVANT, priority=False, waiting_on=None
    )


def test_an_exclusion_after_a_priority_listing_still_excludes():
    decision = screening_decision(AGENCIES, {"bkn": False, "kemnaker": True, "kemensos": True})
    assert decision.done
    assert decision.reason == ReasonCode.EXCLUDED_SOCIAL_AID


def test_passing_every_agency_is_eligible_with_priority_as_listed():
    answers = {"bkn": False, "kemnaker": True, "kemensos": False}
    assert screening_decision(AGENCIES, answers) == ScreeningDecision(
        done=True, reason=None, priority=True, waiting_on=None
    )
    answers["kemnaker"] = False
    assert screening_decision(AGENCIES, answers).priority is False


def test_an_unknown_agency_effect_is_refused():
    with pytest.raises(ValueError):
        screening_decision([("x", "student", "ignore")], {"x": True})


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("VERIFIED", None),
        ("NOT_FOUND", ReasonCode.ACCOUNT_NOT_FOUND),
        ("NIK_MISMATCH", ReasonCode.ACCOUNT_NIK_MISMATCH),
        ("NOT_KYC", ReasonCode.ACCOUNT_NOT_KYC),
        ("BLOCKED", ReasonCode.ACCOUNT_BLOCKED),
    ],
)
def test_account_status_gives_its_reason(status, reason):
    assert status in ACCOUNT_STATUSES
    assert account_reason(status) == reason


def test_an_unknown_account_status_is_refused_not_passed():
    with pytest.raises(ValueError):
        account_reason("MAYBE")


def test_the_age_cutoff_date_agrees_with_age_on_every_day_across_leap_years():
    from datetime import timedelta

    from rules.eligibility import latest_birth_date_of_age

    ref = date(2027, 1, 1)
    while ref < date(2029, 12, 31):
        cutoff = latest_birth_date_of_age(ref, 18)
        for offset in range(-3, 4):
            born = cutoff + timedelta(days=offset)
            assert (age_on(born, ref) >= 18) == (born <= cutoff), (ref, born)
        # Someone born on 29 February is covered whatever the reference day.
        assert (age_on(date(2008, 2, 29), ref) >= 18) == (date(2008, 2, 29) <= cutoff)
        ref += timedelta(days=1)


def test_local_check_order_is_the_precedence_of_local_eligibility_reason():
    from rules.eligibility import LOCAL_CHECK_ORDER

    assert [r.value for r in LOCAL_CHECK_ORDER] == [
        "UNDERAGE",
        "TEST_FAILED",
        "PRIOR_RECIPIENT",
        "BLACKLISTED",
    ]
    failing_all = local_eligibility_reason(
        birth_date=date(2020, 1, 1),
        test_score=0,
        reference_date=date(2026, 11, 28),
        min_age=18,
        min_test_score=60,
        prior_recipient=True,
        blacklisted=True,
    )
    assert failing_all == LOCAL_CHECK_ORDER[0]
