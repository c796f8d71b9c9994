"""A participant's life after the credit on the dashboard (portal.md, "After the credit"):
the `lifecycle` of `/api/me`, built from what the payout runs recorded (lifecycle.md), and
the survey answers the dashboard takes.

What the registrant sees of a payment:
- `SCHEDULED`: not due yet (no ledger row, its date after today in WIB);
- `DUE`: due and not settled: a ledger row DUE or SENDING, or CONFLICT (possibly paid:
  a person looks at it, and nothing is sent again), or no row yet though its date has come
  (the next payout run writes it), or a survey answered and not yet paid;
- `PAID` (with `paid_at`), `STOPPED` and `FAILED` (with `reason`) as the ledger says. An
  incentive installment of a STOPPED participant that has no row yet is shown STOPPED with
  the participant's reason: the program pays nothing more.

A survey is `OPEN` once incentive installment k is PAID, while the participant is TRAINED
or COMPLETED (a STOPPED or REVOKED participant is paid nothing more, so none opens);
`ANSWERED` once answered; `PAID` once its payment is PAID; `LOCKED` otherwise.

Reads take a connection of the caller's (the dashboard reads a person's waves and their
lifecycles on one connection). Nothing here logs: answers are personal data.
"""

from __future__ import annotations

from collections import defaultdict, namedtuple
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import Connection

from rules import lifecycle as lc
from rules.settings import JAKARTA

# ------------------------------------------------------------------ vocabulary
PAYMENT_STATUSES = ("SCHEDULED", "DUE", "PAID", "STOPPED", "FAILED")
SURVEY_STATUSES = ("LOCKED", "OPEN", "ANSWERED", "PAID")
_LEDGER_TO_SHOWN = {
    "DUE": "DUE",
    "SENDING": "DUE",
    "CONFLICT": "DUE",
    "PAID": "PAID",
    "STOPPED": "STOPPED",
    "FAILED": "FAILED",
}
_PAYABLE_STATES = frozenset({lc.LifecycleState.TRAINED.value, lc.LifecycleState.COMPLETED.value})

# The survey's questions and their fixed choices (portal.md, "Surveys"): rules/lifecycle.py.
CHOICES = lc.SURVEY_CHOICES
COMMENT_MAX = lc.SURVEY_COMMENT_MAX


# What the dashboard's person query (portal/store.py) reads besides the wave entry, for a
# credited wave: the wave's lifecycle settings (`w`) and the participant row (`pa`, NULL
# until a payout run enrols the card), so that a lifecycle costs one more read, not four.
PERSON_COLUMNS = (
    "w.training_balance, w.first_training_days, w.incentive_amount, "
    "w.incentive_installments, w.incentive_interval_days, w.survey_amount, w.surveys, "
    "pa.registrant_id AS pa_registrant_id, pa.state AS pa_state, pa.reason AS pa_reason, "
    "pa.deadline_on AS pa_deadline_on, pa.balance_left AS pa_balance_left, "
    "pa.first_completion_on AS pa_first_completion_on"
)


@dataclass(frozen=True)
class Credited:
    """A CREDITED wave entry of a person: what the lifecycle is read for, with the row of
    PERSON_COLUMNS (its wave's settings and its participant's columns, `pa_*`)."""

    registrant_id: int
    wave_id: int
    credited_at: datetime | None  # naive UTC
    settings: Any
    person: Any


@dataclass(frozen=True)
class _Participant:
    state: str
    reason: str | None
    deadline_on: Any
    balance_left: int
    first_completion_on: Any


def today_wib() -> date:
    return lc.wib_date(datetime.now(UTC))


# ------------------------------------------------------------------ reads
_ROW_TYPES: dict[tuple[str, ...], type] = {}


def rows_of(conn: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """The rows of a read, each with its columns as attributes. On SQLite straight
    through the driver's cursor: SQLAlchemy's statement and result set-up cost ten times
    the lookups themselves (0.45 against 0.04 ms CPU for a participant's two reads on the
    6M wave), and every dashboard read pays it. PostgreSQL's reads go through SQLAlchemy,
    where the round trip outweighs it."""
    if conn.dialect.name != "sqlite":
        return list(conn.execute(text(sql), params))
    cursor = conn.connection.driver_connection.execute(sql, params)  # type: ignore[union-attr]
    names = tuple(d[0] for d in cursor.description)
    row_type = _ROW_TYPES.get(names)
    if row_type is None:
        row_type = _ROW_TYPES.setdefault(names, namedtuple("Row", names))
    return [row_type(*r) for r in cursor.fetchall()]


def read(conn: Connection, entries: Sequence[Credited]) -> dict[int, tuple[dict[str, Any], int]]:
    """(the `lifecycle`, the wave's survey amount) of each CREDITED entry, by registrant
    id: one read for the enrolled participants' payments and survey answers together
    (the participant rows and the waves' settings came with the entries)."""
    if not entries:
        return {}
    participants = {
        e.registrant_id: _Participant(
            e.person.pa_state,
            e.person.pa_reason,
            e.person.pa_deadline_on,
            int(e.person.pa_balance_left),
            e.person.pa_first_completion_on,
        )
        for e in entries
        if e.person.pa_registrant_id is not None
    }
    payments: dict[int, list[Any]] = defaultdict(list)
    answered: dict[int, dict[int, datetime]] = defaultdict(dict)
    if participants:
        ids = list(participants)
        marks = ", ".join(f":r{i}" for i in range(len(ids)))
        params = {f"r{i}": rid for i, rid in enumerate(ids)}
        # Both tables in one round trip: a payment row, or (benefit NULL) a survey answer.
        for r in rows_of(
            conn,
            "SELECT registrant_id, benefit, installment, amount, due_on, status, reason, "
            "updated_at, run_as_of FROM payment "
            f"WHERE registrant_id IN ({marks}) "
            "UNION ALL SELECT registrant_id, NULL, survey, NULL, NULL, NULL, NULL, "
            f"answered_at, NULL FROM survey_response WHERE registrant_id IN ({marks})",
            params,
        ):
            if r.benefit is None:
                answered[r.registrant_id][int(r.installment)] = _as_datetime(r.updated_at)
            else:
                payments[r.registrant_id].append(r)
    today = today_wib()
    out = {}
    for e in entries:
        built = build(
            e,
            e.settings,
            participants.get(e.registrant_id),
            payments.get(e.registrant_id, []),
            answered.get(e.registrant_id, {}),
            today,
        )
        out[e.registrant_id] = (built, int(e.settings.survey_amount))
    return out


def build(
    entry: Credited,
    ws: Any,
    participant: Any | None,
    payments: Sequence[Any],
    answered: Mapping[int, datetime],
    today: date,
) -> dict[str, Any]:
    """The `lifecycle` object of portal.md from what the program recorded. Pure."""
    if participant is None:
        # Credited, and no payout run has enrolled the card yet: waiting for a first
        # training, with the deadline the run will record.
        credited_on = lc.wib_date(entry.credited_at) if entry.credited_at else today
        return {
            "state": lc.LifecycleState.AWAITING_TRAINING.value,
            "reason": "",
            "training_deadline": (
                credited_on + timedelta(days=int(ws.first_training_days))
            ).isoformat(),
            "balance_left": int(ws.training_balance),
            "payments": [],
            "surveys": [{"survey": k, "status": "LOCKED"} for k in range(1, int(ws.surveys) + 1)],
        }
    state = participant.state
    reason = participant.reason or ""
    rows = {(p.benefit, int(p.installment)): p for p in payments}
    shown: list[dict[str, Any]] = []
    completion = (
        _as_date(participant.first_completion_on) if participant.first_completion_on else None
    )
    if state != lc.LifecycleState.REVOKED.value:
        for k in range(1, int(ws.incentive_installments) + 1):
            row = rows.get((lc.Benefit.INCENTIVE.value, k))
            if row is not None:
                shown.append(_payment(row))
            elif completion is not None:
                due = lc.incentive_due_on(completion, k, int(ws.incentive_interval_days))
                item = {
                    "benefit": lc.Benefit.INCENTIVE.value,
                    "installment": k,
                    "amount": int(ws.incentive_amount),
                    "due": due.isoformat(),
                }
                if state == lc.LifecycleState.STOPPED.value:
                    item.update(status="STOPPED", reason=reason)
                else:
                    item["status"] = "DUE" if due <= today else "SCHEDULED"
                shown.append(item)
    surveys = []
    for k in range(1, int(ws.surveys) + 1):
        row = rows.get((lc.Benefit.SURVEY.value, k))
        at = answered.get(k)
        if row is not None:
            shown.append(_payment(row))
        elif at is not None and state != lc.LifecycleState.REVOKED.value:
            # Answered: due at the next payout run, which writes its ledger row.
            item = {
                "benefit": lc.Benefit.SURVEY.value,
                "installment": k,
                "amount": int(ws.survey_amount),
                "due": lc.wib_date(at).isoformat(),
                "status": "DUE",
            }
            if state == lc.LifecycleState.STOPPED.value:
                item.update(status="STOPPED", reason=reason)
            shown.append(item)
        surveys.append({"survey": k, "status": survey_status(state, rows, k, at is not None)})
    return {
        "state": state,
        "reason": reason,
        "training_deadline": _as_date(participant.deadline_on).isoformat(),
        "balance_left": int(participant.balance_left),
        "payments": shown,
        "surveys": surveys,
    }


def survey_status(state: str, rows: Mapping[tuple[str, int], Any], k: int, answered: bool) -> str:
    paid = rows.get((lc.Benefit.SURVEY.value, k))
    if paid is not None and paid.status == "PAID":
        return "PAID"
    if answered:
        return "ANSWERED"
    installment = rows.get((lc.Benefit.INCENTIVE.value, k))
    if state in _PAYABLE_STATES and installment is not None and installment.status == "PAID":
        return "OPEN"
    return "LOCKED"


def _payment(row: Any) -> dict[str, Any]:
    status = _LEDGER_TO_SHOWN.get(row.status, "DUE")
    item: dict[str, Any] = {
        "benefit": row.benefit,
        "installment": int(row.installment),
        "amount": int(row.amount),
        "due": _as_date(row.due_on).isoformat(),
        "status": status,
    }
    if status == "PAID":
        item["paid_at"] = paid_at(_as_datetime(row.updated_at), row.run_as_of)
    elif status in ("STOPPED", "FAILED"):
        item["reason"] = row.reason or ""
    return item


# ------------------------------------------------------------------ surveys
def validate_answers(body: Any) -> dict[str, Any] | None:
    """The answers as stored, or None when a value is outside its choices (422)."""
    if not isinstance(body, dict):
        return None
    answers: dict[str, Any] = {}
    for name in CHOICES:
        value = body.get(name)
        if not lc.survey_choice_ok(name, value):
            return None
        answers[name] = value
    comment = body.get("comment", "")
    if comment is None:
        comment = ""
    if not isinstance(comment, str) or len(comment) > COMMENT_MAX:
        return None
    answers["comment"] = comment
    if set(body) - set(CHOICES) - {"comment"}:
        return None  # an unknown field is a mistake, not something to keep
    return answers


def answers_from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """The page's form fields as the API's JSON body (each may be missing or wrong: the
    body is validated like the API's)."""

    def pick(name: str) -> Any:
        value = form.get(name)
        return value if isinstance(value, str) else None

    helped = pick("training_helped")
    body: dict[str, Any] = {
        "work_status": pick("work_status"),
        "training_helped": int(helped)
        if helped and helped.isdigit() and len(helped) == 1
        else None,
        "field": pick("field"),
        "applied_for_job": {"true": True, "false": False}.get(pick("applied_for_job") or ""),
        "recommend": {"true": True, "false": False}.get(pick("recommend") or ""),
        "comment": (pick("comment") or "").replace("\r\n", "\n"),
    }
    return body


def store_answer(conn: Connection, registrant_id: int, k: int, answers: dict[str, Any]) -> bool:
    """Stores the answers once: False when survey k of that participant was answered."""
    done = conn.execute(
        text(
            "INSERT INTO survey_response (registrant_id, survey, answers_json, answered_at) "
            "VALUES (:r, :k, :a, :at) ON CONFLICT (registrant_id, survey) DO NOTHING"
        ),
        {
            "r": registrant_id,
            "k": k,
            "a": orjson.dumps(answers).decode(),
            "at": datetime.now(UTC).replace(tzinfo=None),
        },
    )
    return bool(done.rowcount)


# ------------------------------------------------------------------ helpers
def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])  # SQLite hands text back through text()


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def paid_at(recorded: datetime, run_as_of: Any) -> str:
    """When a payment was paid, in WIB: the moment the program recorded the partner's
    answer. A run for a date still ahead (a rehearsal, the demo's months) pays as of that
    date: the time of day is kept and the date is the run's, so a payment never reads as
    paid before it fell due."""
    moment = recorded.replace(tzinfo=UTC) if recorded.tzinfo is None else recorded
    local = moment.astimezone(JAKARTA).replace(microsecond=0)
    if run_as_of is not None:
        day = _as_date(run_as_of)
        if day > local.date():
            local = local.replace(year=day.year, month=day.month, day=day.day)
    return local.isoformat()
