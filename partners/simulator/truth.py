"""What every simulated partner knows about a person, derived from a seed and the NIK alone."""

import hashlib
import struct
from typing import Any, NamedTuple

EXCLUSION_CATEGORIES = (
    "CIVIL_SERVANT",
    "STUDENT",
    "SOCIAL_AID",
    "VILLAGE_OFFICIAL",
    "MILITARY_POLICE",
    "SOE_BOARD",
    "LEGISLATOR",
)
ACCOUNT_STATUSES = ("VERIFIED", "NOT_FOUND", "NIK_MISMATCH", "NOT_KYC", "BLOCKED")

# Agencies the simulator knows, with the category of the list each one holds.
AGENCY_CATEGORIES: dict[str, str] = {
    "civil-service": "CIVIL_SERVANT",
    "military-police": "MILITARY_POLICE",
    "education": "STUDENT",
    "village": "VILLAGE_OFFICIAL",
    "legislature": "LEGISLATOR",
    "soe": "SOE_BOARD",
    "social-aid": "SOCIAL_AID",
}
# The labour ministry's list of laid-off workers (a priority list, not an exclusion).
LAID_OFF_AGENCY = "manpower"
PAYMENT_PROVIDERS = ("bank-a", "bank-b", "wallet-a", "wallet-b")
# The training platforms (marketplaces) whose event feeds the simulator serves, at
# /training/<id>/v1/events.
TRAINING_PLATFORMS = ("marketplace-a", "marketplace-b")
DISBURSEMENT_FAILURES = ("ACCOUNT_CLOSED", "ACCOUNT_BLOCKED", "LIMIT_EXCEEDED")

# Name scores at or above this pass the program's default name_score_min.
NAME_SCORE_PASS = 80

_SCALE = 10_000  # shares below are in basis points of 1/10000


def _table(shares: tuple[tuple[Any, int], ...]) -> tuple[Any, ...]:
    # A lookup table indexed by a draw in [0, 10000): one tuple index per person.
    out: list[Any] = []
    for value, share in shares:
        out.extend([value] * share)
    if len(out) != _SCALE:
        raise ValueError(f"shares add up to {len(out)}, not {_SCALE}")
    return tuple(out)


FATE_SHARES = (
    ("OK", 7400),
    ("NIK_NOT_FOUND", 1100),
    ("DECEASED", 100),
    ("BIRTH_DATE_MISMATCH", 500),
    ("NAME_MISMATCH", 500),
    ("KK_MISMATCH", 400),
)
CATEGORY_SHARES = (
    (None, 6300),
    ("CIVIL_SERVANT", 1000),
    ("STUDENT", 900),
    ("SOCIAL_AID", 800),
    ("VILLAGE_OFFICIAL", 400),
    ("MILITARY_POLICE", 300),
    ("SOE_BOARD", 150),
    ("LEGISLATOR", 150),
)
ACCOUNT_SHARES = (
    ("VERIFIED", 8600),
    ("NOT_FOUND", 500),
    ("NIK_MISMATCH", 300),
    ("NOT_KYC", 400),
    ("BLOCKED", 200),
)
BOUNDARY_SCORE_BP = 300  # 3%: exactly 80 (pass) or exactly 79 (mismatch)
LAID_OFF_BP = 300
CREDIT_REJECTED_BP = 30
SMS_REJECTED_BP = 50

# Disbursements: 1% of (NIK, account) pairs fail, for one of these reasons.
DISBURSEMENT_FAILED_BP = 100
DISBURSEMENT_FAILURE_SHARES = (
    ("ACCOUNT_CLOSED", 4000),
    ("ACCOUNT_BLOCKED", 4000),
    ("LIMIT_EXCEEDED", 2000),
)

_FATES = _table(FATE_SHARES)
_DISBURSEMENT_FAILURES = _table(DISBURSEMENT_FAILURE_SHARES)
_CATEGORIES = _table(CATEGORY_SHARES)
_ACCOUNTS = _table(ACCOUNT_SHARES)
_UNPACK = struct.Struct(">8I").unpack


class PersonTruth(NamedTuple):
    """The partners' view of one person; every field is an independent draw."""

    registry_fate: str
    name_score: int
    excluded_category: str | None
    laid_off: bool
    account_status: str
    credit_rejected: bool
    sms_rejected: bool


_new = tuple.__new__


def person_truth(seed: str, nik: str) -> PersonTruth:
    """Derive a person's truth from sha256(f"{seed}|{nik}"), one 32-bit word per field."""
    a, b, c, d, e, f, g, _ = _UNPACK(hashlib.sha256(f"{seed}|{nik}".encode()).digest())
    fate = _FATES[a % _SCALE]
    boundary = b % _SCALE < BOUNDARY_SCORE_BP
    spread = b // _SCALE
    if fate == "NAME_MISMATCH":
        score = 79 if boundary else 30 + spread % 49  # 30..78
    else:
        score = 80 if boundary else 81 + spread % 20  # 81..100
    # tuple.__new__ skips the NamedTuple's Python-level constructor: this runs per item.
    return _new(
        PersonTruth,
        (
            fate,
            score,
            _CATEGORIES[c % _SCALE],
            d % _SCALE < LAID_OFF_BP,
            _ACCOUNTS[e % _SCALE],
            f % _SCALE < CREDIT_REJECTED_BP,
            g % _SCALE < SMS_REJECTED_BP,
        ),
    )


def identity_result(truth: PersonTruth) -> dict[str, Any]:
    """The registry's answer for a person (without the `ref`)."""
    if truth.registry_fate == "NIK_NOT_FOUND":
        return {"found": False}
    return {
        "found": True,
        "deceased": truth.registry_fate == "DECEASED",
        "name_score": truth.name_score,
        "birth_date_match": truth.registry_fate != "BIRTH_DATE_MISMATCH",
        "kk_match": truth.registry_fate != "KK_MISMATCH",
    }


def agency_listed(truth: PersonTruth, agency_id: str) -> bool:
    """Whether `agency_id` lists the person; an unknown agency lists nobody."""
    if agency_id == LAID_OFF_AGENCY:
        return truth.laid_off
    category = AGENCY_CATEGORIES.get(agency_id)
    return category is not None and truth.excluded_category == category


def account_status(
    truth: PersonTruth, provider_id: str, providers: tuple[str, ...] = PAYMENT_PROVIDERS
) -> str:
    """The payment partner's status for the person's account; unknown providers know nobody."""
    return truth.account_status if provider_id in providers else "NOT_FOUND"


def identity_reason(truth: PersonTruth, name_score_min: int = NAME_SCORE_PASS) -> str | None:
    """The identity-stage reason the program should give, or None when the person passes."""
    fate = truth.registry_fate
    if fate in ("NIK_NOT_FOUND", "DECEASED", "BIRTH_DATE_MISMATCH"):
        return fate
    if truth.name_score < name_score_min:
        return "NAME_MISMATCH"
    return "KK_MISMATCH" if fate == "KK_MISMATCH" else None


def passes_everything(truth: PersonTruth) -> bool:
    """A person every partner accepts: registry, agencies, account, credit and SMS."""
    return (
        truth.registry_fate == "OK"
        and truth.excluded_category is None
        and truth.account_status == "VERIFIED"
        and not truth.credit_rejected
        and not truth.sms_rejected
    )


def disbursement_failure(seed: str, nik: str, account: str) -> str | None:
    """Why a payment partner fails every disbursement to this (NIK, account), or None (the
    ~99% it pays); from sha256(f"{seed}|payout|{nik}|{account}")."""
    a, b = struct.unpack(
        ">2I", hashlib.sha256(f"{seed}|payout|{nik}|{account}".encode()).digest()[:8]
    )
    if a % _SCALE >= DISBURSEMENT_FAILED_BP:
        return None
    return str(_DISBURSEMENT_FAILURES[b % _SCALE])
