"""After the balance (lifecycle.md): what the training events mean, when each payment falls
due, what a re-check decides. Pure: no database, no network, no Prefect.

Dates are WIB (Asia/Jakarta) calendar dates: a purchase at 23:59 WIB on the deadline day
counts; one a minute later does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from rules.settings import JAKARTA

# ---------------------------------------------------------------- vocabulary


class LifecycleState(StrEnum):
    AWAITING_TRAINING = "AWAITING_TRAINING"
    IN_TRAINING = "IN_TRAINING"
    TRAINED = "TRAINED"
    REVOKED = "REVOKED"
    STOPPED = "STOPPED"
    COMPLETED = "COMPLETED"


# States in which nothing more changes by a training event.
SETTLED = frozenset(
    {
        LifecycleState.TRAINED,
        LifecycleState.REVOKED,
        LifecycleState.STOPPED,
        LifecycleState.COMPLETED,
    }
)


class RevokeReason(StrEnum):
    NO_TRAINING_IN_TIME = "NO_TRAINING_IN_TIME"
    BLACKLISTED = "BLACKLISTED"


class Benefit(StrEnum):
    INCENTIVE = "incentive"
    SURVEY = "survey"


class PaymentStatus(StrEnum):
    """A payment's ledger row. DUE: written, not yet sent (checked or not); SENDING: sent or
    about to be, the answer not yet had (possibly paid: looked up before anything is sent
    again); PAID, FAILED (final, the money did not move), STOPPED (a re-check listed the
    participant), CONFLICT (the partner saw the key with another body: possibly paid)."""

    DUE = "DUE"
    SENDING = "SENDING"
    PAID = "PAID"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    CONFLICT = "CONFLICT"


# At most one of these per (NIK, benefit, installment) in the program (models/tables.py).
LIVE_PAYMENT_STATUSES = ("DUE", "SENDING", "PAID", "CONFLICT")
# Counted as "pending" by the report: due, not settled.
PENDING_PAYMENT_STATUSES = frozenset({PaymentStatus.DUE, PaymentStatus.SENDING})

EVENT_TYPES = frozenset({"PURCHASED", "CANCELLED", "COMPLETED"})

# Survey k's questions and their fixed choices (portal.md, "Surveys"): the dashboard
# validates answers against them, the payout report counts answers by them.
SURVEY_CHOICES: dict[str, tuple[object, ...]] = {
    "work_status": ("employed", "own_business", "not_working"),
    "training_helped": (1, 2, 3, 4, 5),
    "field": ("digital", "sales", "hospitality", "language", "trades", "other"),
    "applied_for_job": (True, False),
    "recommend": (True, False),
}
SURVEY_COMMENT_MAX = 500  # characters of the optional free text


def survey_choice_ok(name: str, value: object) -> bool:
    """Whether `value` is one of question `name`'s choices: a bool is not a score (1-5)
    and a number is not a yes or no, though Python counts True == 1."""
    choices = SURVEY_CHOICES[name]
    return isinstance(value, bool) == isinstance(choices[0], bool) and value in choices


@dataclass(frozen=True)
class LifecycleSettings:
    """lifecycle.md's settings, recorded with each wave."""

    first_training_days: int = 30
    incentive_amount: int = 600_000
    incentive_installments: int = 4
    incentive_interval_days: int = 30
    survey_amount: int = 50_000
    surveys: int = 3


@dataclass(frozen=True)
class Event:
    """One training platform event as the program keeps it (`at` aware or naive UTC)."""

    event_id: str
    type: str
    course_id: str
    price: int | None
    at: datetime


# ---------------------------------------------------------------- dates


def wib_date(moment: datetime) -> date:
    """The WIB calendar date of a moment (a naive moment is UTC, as the program stores)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(JAKARTA).date()


def end_of_day_utc(day: date) -> datetime:
    """The last moment of a WIB date, as naive UTC: events up to it count for that date."""
    local = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=JAKARTA)
    return local.astimezone(UTC).replace(tzinfo=None) - timedelta(microseconds=1)


def deadline(credited_on: date, settings: LifecycleSettings) -> date:
    """The last day a first purchase counts."""
    return credited_on + timedelta(days=settings.first_training_days)


def incentive_due_on(first_completion_on: date, installment: int, interval_days: int) -> date:
    return first_completion_on + timedelta(days=(installment - 1) * interval_days)


def installments_due(
    first_completion_on: date, as_of: date, settings: LifecycleSettings
) -> list[tuple[int, date]]:
    """(installment, due date) of every incentive installment due on or before `as_of`."""
    due = []
    for k in range(1, settings.incentive_installments + 1):
        on = incentive_due_on(first_completion_on, k, settings.incentive_interval_days)
        if on <= as_of:
            due.append((k, on))
    return due


def installment_cutoff(as_of: date, installment: int, interval_days: int) -> date:
    """The latest first-completion date for which `installment` is due on `as_of`: lets a
    set-based statement select who is due without date arithmetic in SQL."""
    return as_of - timedelta(days=(installment - 1) * interval_days)


def idempotency_key(wave_id: int, nik: str, benefit: str, installment: int) -> str:
    return f"w{wave_id}:{nik}:{benefit}:{installment}"


def revoke_key(wave_id: int, nik: str) -> str:
    return f"w{wave_id}:{nik}:training:revoke"


def payout_reference(as_of: date) -> str:
    return f"payout-{as_of.isoformat()}"


def revoke_reference(as_of: date) -> str:
    return f"revoke/{as_of.isoformat()}"


# ---------------------------------------------------------------- what the events mean


def _ordered(events: Iterable[Event]) -> list[Event]:
    return sorted(
        events, key=lambda e: (e.at if e.at.tzinfo else e.at.replace(tzinfo=UTC), e.event_id)
    )


def live_purchases(events: Iterable[Event]) -> list[Event]:
    """Purchases not cancelled, oldest first. A CANCELLED cancels the latest purchase of its
    course on the card made at or before it (events may arrive in any order: `at` decides)."""
    ordered = _ordered(events)
    open_by_course: dict[str, list[Event]] = {}
    for e in ordered:
        if e.type == "PURCHASED":
            open_by_course.setdefault(e.course_id, []).append(e)
        elif e.type == "CANCELLED":
            stack = open_by_course.get(e.course_id)
            if stack:
                stack.pop()
    alive = [e for stack in open_by_course.values() for e in stack]
    return _ordered(alive)


def first_purchase(events: Iterable[Event]) -> Event | None:
    """The earliest PURCHASED event not later cancelled."""
    purchases = live_purchases(events)
    return purchases[0] if purchases else None


def first_completion(events: Sequence[Event]) -> Event | None:
    """The earliest COMPLETED event whose course was bought with the card (a completion
    without a purchase is not a completion: `orphan_completions` reports it)."""
    bought = {e.course_id for e in events if e.type == "PURCHASED"}
    done = [e for e in _ordered(events) if e.type == "COMPLETED" and e.course_id in bought]
    return done[0] if done else None


def orphan_completions(events: Sequence[Event]) -> int:
    bought = {e.course_id for e in events if e.type == "PURCHASED"}
    return sum(1 for e in events if e.type == "COMPLETED" and e.course_id not in bought)


def balance_left(credited: int, events: Iterable[Event]) -> int:
    """The credited amount minus the prices of purchases not cancelled (never below 0)."""
    spent = sum(e.price or 0 for e in live_purchases(events))
    return max(0, credited - spent)


@dataclass(frozen=True)
class TrainingView:
    """What a participant's events say on a date."""

    state: LifecycleState
    first_purchase_on: date | None
    first_completion_on: date | None
    balance_left: int
    late_purchase: bool  # a purchase exists, but after the deadline: it does not count
    orphan_completions: int


def training_view(
    events: Sequence[Event],
    *,
    credited: int,
    deadline_on: date,
    as_of: date,
) -> TrainingView:
    """The not-yet-trained participant's state from their events up to the end of `as_of`
    (WIB): AWAITING_TRAINING, IN_TRAINING or TRAINED."""
    cutoff = end_of_day_utc(as_of)
    seen = [e for e in events if _naive_utc(e.at) <= cutoff]
    purchase = first_purchase(seen)
    in_time = purchase is not None and wib_date(purchase.at) <= deadline_on
    completion = first_completion(seen) if in_time else None
    if completion is not None:
        state = LifecycleState.TRAINED
    elif in_time:
        state = LifecycleState.IN_TRAINING
    else:
        state = LifecycleState.AWAITING_TRAINING
    return TrainingView(
        state,
        wib_date(purchase.at) if purchase is not None and in_time else None,
        wib_date(completion.at) if completion is not None else None,
        balance_left(credited, seen),
        purchase is not None and not in_time,
        orphan_completions(seen),
    )


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


# ---------------------------------------------------------------- revocation and re-checks


def revocation_reason(
    state: str, deadline_on: date, as_of: date, blacklisted: bool
) -> RevokeReason | None:
    """Why a participant is revoked by the run of `as_of`, or None. The blacklist wins: a
    blacklisted card is closed whatever was spent."""
    if state not in (LifecycleState.AWAITING_TRAINING, LifecycleState.IN_TRAINING):
        return None
    if blacklisted:
        return RevokeReason.BLACKLISTED
    if state == LifecycleState.AWAITING_TRAINING and deadline_on < as_of:
        return RevokeReason.NO_TRAINING_IN_TIME
    return None


def recheck_reason(
    blacklisted: bool,
    excluded_by: Sequence[str],
    deceased: bool,
) -> str | None:
    """Why a payment is stopped: the program's blacklist first, then the first excluding
    agency's category (in the partners file's order), then the registry's deceased flag."""
    if blacklisted:
        return "BLACKLISTED"
    if excluded_by:
        return f"EXCLUDED_{excluded_by[0]}"
    if deceased:
        return "DECEASED"
    return None


def completed(statuses: Mapping[int, str], installments: int) -> bool:
    """Every incentive installment paid or failed."""
    return all(
        statuses.get(k) in (PaymentStatus.PAID, PaymentStatus.FAILED)
        for k in range(1, installments + 1)
    )
