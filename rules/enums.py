"""The program's vocabulary: outcomes, reason codes, stages and registrant states.

Defined here, with the rules that decide in it (wave-rules.md), as plain enums with no
database or Prefect import; `models/` stores it and re-exports it (models/enums.py), so
the dependency goes one way: models import rules, rules never import models.
"""

from enum import StrEnum


class Outcome(StrEnum):
    """What `export`, `report` and `explain` show for a registrant (interfaces.md)."""

    REJECTED = "REJECTED"
    PENDING = "PENDING"
    ELIGIBLE = "ELIGIBLE"
    WAITLISTED = "WAITLISTED"
    SELECTED = "SELECTED"
    CONFIRMED = "CONFIRMED"
    CREDITED = "CREDITED"
    NOT_SELECTED = "NOT_SELECTED"


class ReasonCode(StrEnum):
    """Reason codes of wave-rules.md, listed in the order the checks run."""

    # 1. intake (registrant-file.md)
    MALFORMED_ROW = "MALFORMED_ROW"
    MISSING_FIELD = "MISSING_FIELD"
    INVALID_NIK = "INVALID_NIK"
    NIK_DATA_MISMATCH = "NIK_DATA_MISMATCH"
    DUPLICATE_NIK = "DUPLICATE_NIK"
    EMAIL_UNVERIFIED = "EMAIL_UNVERIFIED"
    # 2. local eligibility
    UNDERAGE = "UNDERAGE"
    TEST_FAILED = "TEST_FAILED"
    PRIOR_RECIPIENT = "PRIOR_RECIPIENT"
    BLACKLISTED = "BLACKLISTED"
    # 3. identity (population registry)
    NIK_NOT_FOUND = "NIK_NOT_FOUND"
    DECEASED = "DECEASED"
    BIRTH_DATE_MISMATCH = "BIRTH_DATE_MISMATCH"
    NAME_MISMATCH = "NAME_MISMATCH"
    KK_MISMATCH = "KK_MISMATCH"
    # 4. agency screening: EXCLUDED_<CATEGORY> is built from configuration, see
    #    rules.eligibility.excluded_reason; these are the usual ones.
    EXCLUDED_CIVIL_SERVANT = "EXCLUDED_CIVIL_SERVANT"
    EXCLUDED_MILITARY_POLICE = "EXCLUDED_MILITARY_POLICE"
    EXCLUDED_STUDENT = "EXCLUDED_STUDENT"
    EXCLUDED_VILLAGE_OFFICIAL = "EXCLUDED_VILLAGE_OFFICIAL"
    EXCLUDED_LEGISLATOR = "EXCLUDED_LEGISLATOR"
    EXCLUDED_SOE_BOARD = "EXCLUDED_SOE_BOARD"
    EXCLUDED_SOCIAL_AID = "EXCLUDED_SOCIAL_AID"
    # 5. draw
    HOUSEHOLD_CAP = "HOUSEHOLD_CAP"
    QUOTA_FULL = "QUOTA_FULL"
    # 6. payout account
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    ACCOUNT_NIK_MISMATCH = "ACCOUNT_NIK_MISMATCH"
    ACCOUNT_NOT_KYC = "ACCOUNT_NOT_KYC"
    ACCOUNT_BLOCKED = "ACCOUNT_BLOCKED"
    # 7. rollout
    CREDIT_REJECTED = "CREDIT_REJECTED"


class PendingReason(StrEnum):
    """The `reason` shown for a PENDING registrant: the stage it waits at."""

    PENDING_ELIGIBILITY = "PENDING_ELIGIBILITY"
    PENDING_IDENTITY = "PENDING_IDENTITY"
    PENDING_SCREENING = "PENDING_SCREENING"
    PENDING_ACCOUNT = "PENDING_ACCOUNT"
    PENDING_ROLLOUT = "PENDING_ROLLOUT"


class Stage(StrEnum):
    """The stages of a wave, in order; each is one Prefect subflow."""

    INTAKE = "intake"
    LOCAL_ELIGIBILITY = "local-eligibility"
    IDENTITY = "identity"
    SCREENING = "screening"
    DRAW = "draw"
    ACCOUNTS = "accounts"
    ROLLOUT = "rollout"
    ANNOUNCE = "announce"


class State(StrEnum):
    """Where a registrant is inside the program (stored; finer than Outcome)."""

    REJECTED = "REJECTED"  # final, with a reason
    AWAIT_LOCAL = "AWAIT_LOCAL"  # intake accepted, local eligibility to do
    AWAIT_IDENTITY = "AWAIT_IDENTITY"  # locally eligible, registry check to do
    AWAIT_SCREENING = "AWAIT_SCREENING"  # identity verified, agencies to check
    ELIGIBLE = "ELIGIBLE"  # in the pool, not drawn yet
    WAITLISTED = "WAITLISTED"
    SELECTED = "SELECTED"  # drawn, payout account to check
    CONFIRMED = "CONFIRMED"  # account verified, card issued, credit to do
    CREDITED = "CREDITED"
    NOT_SELECTED = "NOT_SELECTED"  # final: HOUSEHOLD_CAP or QUOTA_FULL


class WaveStatus(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"


class Allocation(StrEnum):
    NATIONAL = "national"
    PROVINCIAL = "provincial"


class LedgerStatus(StrEnum):
    """A ledger credit row: written PENDING before the issuer is called."""

    PENDING = "PENDING"
    APPLIED = "APPLIED"
    REJECTED = "REJECTED"
    CONFLICT = "CONFLICT"


class MessageStatus(StrEnum):
    QUEUED = "QUEUED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


# Which stage gives which reason: data, next to ReasonCode, read wherever reasons are
# grouped by stage (the funnel, the stage artifacts, the stage lines).
REASON_STAGE: dict[ReasonCode, Stage] = {
    ReasonCode.MALFORMED_ROW: Stage.INTAKE,
    ReasonCode.MISSING_FIELD: Stage.INTAKE,
    ReasonCode.INVALID_NIK: Stage.INTAKE,
    ReasonCode.NIK_DATA_MISMATCH: Stage.INTAKE,
    ReasonCode.DUPLICATE_NIK: Stage.INTAKE,
    ReasonCode.EMAIL_UNVERIFIED: Stage.INTAKE,
    ReasonCode.UNDERAGE: Stage.LOCAL_ELIGIBILITY,
    ReasonCode.TEST_FAILED: Stage.LOCAL_ELIGIBILITY,
    ReasonCode.PRIOR_RECIPIENT: Stage.LOCAL_ELIGIBILITY,
    ReasonCode.BLACKLISTED: Stage.LOCAL_ELIGIBILITY,
    ReasonCode.NIK_NOT_FOUND: Stage.IDENTITY,
    ReasonCode.DECEASED: Stage.IDENTITY,
    ReasonCode.BIRTH_DATE_MISMATCH: Stage.IDENTITY,
    ReasonCode.NAME_MISMATCH: Stage.IDENTITY,
    ReasonCode.KK_MISMATCH: Stage.IDENTITY,
    ReasonCode.EXCLUDED_CIVIL_SERVANT: Stage.SCREENING,
    ReasonCode.EXCLUDED_MILITARY_POLICE: Stage.SCREENING,
    ReasonCode.EXCLUDED_STUDENT: Stage.SCREENING,
    ReasonCode.EXCLUDED_VILLAGE_OFFICIAL: Stage.SCREENING,
    ReasonCode.EXCLUDED_LEGISLATOR: Stage.SCREENING,
    ReasonCode.EXCLUDED_SOE_BOARD: Stage.SCREENING,
    ReasonCode.EXCLUDED_SOCIAL_AID: Stage.SCREENING,
    ReasonCode.HOUSEHOLD_CAP: Stage.DRAW,
    ReasonCode.QUOTA_FULL: Stage.DRAW,
    ReasonCode.ACCOUNT_NOT_FOUND: Stage.ACCOUNTS,
    ReasonCode.ACCOUNT_NIK_MISMATCH: Stage.ACCOUNTS,
    ReasonCode.ACCOUNT_NOT_KYC: Stage.ACCOUNTS,
    ReasonCode.ACCOUNT_BLOCKED: Stage.ACCOUNTS,
    ReasonCode.CREDIT_REJECTED: Stage.ROLLOUT,
}


def stage_of_reason(reason: str) -> Stage | None:
    """The stage whose check gives `reason` (wave-rules.md's order): every ReasonCode by
    REASON_STAGE, and the configured agencies' EXCLUDED_<CATEGORY> by their prefix."""
    if reason.startswith("EXCLUDED_"):
        return Stage.SCREENING
    try:
        return REASON_STAGE.get(ReasonCode(reason))
    except ValueError:
        return None


def reasons_of(stage: Stage) -> frozenset[str]:
    """The reason codes a stage gives (the screening's configured ones aside)."""
    return frozenset(r.value for r, s in REASON_STAGE.items() if s == stage)
