"""Eligibility decisions after intake: local checks, the population registry, agency screening
and the payout account (wave-rules.md stages 2, 3, 4 and 6), each giving the first failing reason.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from rules.enums import ReasonCode

EXCLUDE = "exclude"
PRIORITIZE = "prioritize"
AGENCY_EFFECTS: frozenset[str] = frozenset({EXCLUDE, PRIORITIZE})

_ACCOUNT_REASONS: dict[str, ReasonCode | None] = {
    "VERIFIED": None,
    "NOT_FOUND": ReasonCode.ACCOUNT_NOT_FOUND,
    "NIK_MISMATCH": ReasonCode.ACCOUNT_NIK_MISMATCH,
    "NOT_KYC": ReasonCode.ACCOUNT_NOT_KYC,
    "BLOCKED": ReasonCode.ACCOUNT_BLOCKED,
}
ACCOUNT_STATUSES: frozenset[str] = frozenset(_ACCOUNT_REASONS)


def age_on(birth_date: date, reference_date: date) -> int:
    """Completed years on `reference_date`; a 29 February birthday is reached on 1 March
    in a non-leap year."""
    not_reached = (reference_date.month, reference_date.day) < (birth_date.month, birth_date.day)
    return reference_date.year - birth_date.year - not_reached


def latest_birth_date_of_age(reference_date: date, min_age: int) -> date:
    """The latest birth date that is `min_age` or older on `reference_date`.

    age_on(b, ref) >= min_age exactly when b <= this date, so the database can apply
    the age rule as a comparison (a 29 February reference falls back to 28 February).
    """
    year = reference_date.year - min_age
    try:
        return reference_date.replace(year=year)
    except ValueError:
        return date(year, 2, 28)


# The order the local checks apply in (local_eligibility_reason, and the set-based
# version of tasks/eligibility.py, which runs one statement per check in this order).
LOCAL_CHECK_ORDER = (
    ReasonCode.UNDERAGE,
    ReasonCode.TEST_FAILED,
    ReasonCode.PRIOR_RECIPIENT,
    ReasonCode.BLACKLISTED,
)


def local_eligibility_reason(
    *,
    birth_date: date,
    test_score: int,
    reference_date: date,
    min_age: int,
    min_test_score: int,
    prior_recipient: bool,
    blacklisted: bool,
) -> ReasonCode | None:
    """The first failing local check, or None when the registrant goes on to the registry."""
    if age_on(birth_date, reference_date) < min_age:
        return ReasonCode.UNDERAGE
    if test_score < min_test_score:
        return ReasonCode.TEST_FAILED
    if prior_recipient:
        return ReasonCode.PRIOR_RECIPIENT
    if blacklisted:
        return ReasonCode.BLACKLISTED
    return None


def identity_reason(
    *,
    found: bool,
    deceased: bool | None,
    name_score: int | None,
    birth_date_match: bool | None,
    kk_match: bool | None,
    name_score_min: int,
) -> ReasonCode | None:
    """The first failing registry check, or None when the identity is verified.

    A found record must carry every result: a missing one cannot be judged either way (the
    registrant stays pending, wave-rules.md), so it raises ValueError rather than pass or fail.
    """
    if not found:
        return ReasonCode.NIK_NOT_FOUND
    if deceased is None or name_score is None or birth_date_match is None or kk_match is None:
        raise ValueError("registry answer for a found NIK lacks a result; it cannot be judged")
    if deceased:
        return ReasonCode.DECEASED
    if not birth_date_match:
        return ReasonCode.BIRTH_DATE_MISMATCH
    if name_score < name_score_min:
        return ReasonCode.NAME_MISMATCH
    if not kk_match:
        return ReasonCode.KK_MISMATCH
    return None


def excluded_reason(category: str) -> str:
    """`EXCLUDED_<CATEGORY>` for an agency category: the ReasonCode member when there is one.

    Hyphens and spaces in a configured category become underscores (`soe-board` ->
    `EXCLUDED_SOE_BOARD`), so a reason is always one identifier.
    """
    normalized = category.strip().upper().replace("-", "_").replace(" ", "_")
    if not normalized:
        raise ValueError("an agency category must not be empty")
    value = "EXCLUDED_" + normalized
    try:
        return ReasonCode(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class ScreeningDecision:
    """Where a registrant stands after the agencies answered so far.

    `done` with `reason` None means eligible; not `done` means waiting on agency `waiting_on`.
    """

    done: bool
    reason: str | None
    priority: bool
    waiting_on: str | None


def screening_decision(
    agencies: Sequence[tuple[str, str, str]], answers: Mapping[str, bool]
) -> ScreeningDecision:
    """Walk the agencies `(agency_id, category, effect)` in configured order against the
    answers known so far (`agency_id -> listed`): an exclusion ends the walk, an unknown
    answer pauses it."""
    priority = False
    for agency_id, category, effect in agencies:
        if effect not in AGENCY_EFFECTS:
            raise ValueError(f"agency {agency_id!r} has unknown effect {effect!r}")
        listed = answers.get(agency_id)
        if listed is None:
            return ScreeningDecision(
                done=False, reason=None, priority=priority, waiting_on=agency_id
            )
        if not listed:
            continue
        if effect == EXCLUDE:
            return ScreeningDecision(
                done=True, reason=excluded_reason(category), priority=priority, waiting_on=None
            )
        priority = True
    return ScreeningDecision(done=True, reason=None, priority=priority, waiting_on=None)


def account_reason(status: str) -> ReasonCode | None:
    """The reason for a payout partner's account status; None when the account is verified."""
    try:
        return _ACCOUNT_REASONS[status]
    except KeyError:
        raise ValueError(f"unknown payout account status {status!r}") from None
