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
