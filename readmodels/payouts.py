"""`prakerja payout report`: the lifecycle funnel, revocations, payments by benefit and
installment, money, and lifecycle.md's conservation checks; `explain`'s lifecycle part.

With an as-of date, the run's part: what was revoked on that date, and the payments that
run settled or left pending; participants' states are always as they stand.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import orjson
from sqlalchemy import exists, func, or_, select

from models.db import SessionFactory
from models.queries import R
from models.tables import (
    FeedCursor,
    Participant,
    Payment,
    PayoutRun,
    SurveyResponse,
    TrainingEvent,
)
from rules.enums import State
from rules.lifecycle import SURVEY_CHOICES, LifecycleState, end_of_day_utc, survey_choice_ok

P = Participant.__table__  # type: ignore[attr-defined]
Y = Payment.__table__  # type: ignore[attr-defined]
E = TrainingEvent.__table__  # type: ignore[attr-defined]
C = FeedCursor.__table__  # type: ignore[attr-defined]
RUN = PayoutRun.__table__  # type: ignore[attr-defined]
S = SurveyResponse.__table__  # type: ignore[attr-defined]

PENDING = ("DUE", "SENDING")


def payout_report(sessions: SessionFactory, as_of: date | None = None) -> dict[str, Any]:
    with sessions() as session:
        states: dict[str, int] = {s.value: 0 for s in LifecycleState}
        reasons: dict[str, dict[str, int]] = defaultdict(dict)
        for state, reason, n in session.execute(
            select(P.c.state, P.c.reason, func.count()).group_by(P.c.state, P.c.reason)
        ):
            states[state] = states.get(state, 0) + n
            if reason:
                reasons[state][reason] = n
        revoked_where = [P.c.state == LifecycleState.REVOKED.value]
        if as_of is not None:
            revoked_where.append(P.c.revoked_on == as_of)
        revoked: dict[str, dict[str, int]] = {}
        for reason, n, returned in session.execute(
            select(P.c.reason, func.count(), func.coalesce(func.sum(P.c.amount_returned), 0))
            .where(*revoked_where)
            .group_by(P.c.reason)
        ):
            revoked[reason] = {"count": n, "rupiah_returned": int(returned)}
        card_used = session.execute(
            select(func.count()).where(
                P.c.card_used_at_issuer.is_(True),
                P.c.state == LifecycleState.AWAITING_TRAINING.value,
            )
        ).scalar_one()
        late = session.execute(select(func.count()).where(P.c.late_purchase.is_(True))).scalar_one()
        orphans = session.execute(
            select(func.coalesce(func.sum(P.c.orphan_completions), 0))
        ).scalar_one()
        surveys = survey_summary(session, as_of)
        unmatched = session.execute(
            select(func.count())
            .select_from(E)
            .where(~exists().where(P.c.card_number == E.c.card_number))
        ).scalar_one()
        credited = session.execute(
            select(func.count()).where(R.c.state == State.CREDITED.value)
        ).scalar_one()
        bought, trained, credited_rupiah = session.execute(
            select(
                func.count(P.c.first_purchase_on),
                func.count(P.c.first_completion_on),
                func.coalesce(func.sum(P.c.credited_amount), 0),
            )
        ).one()

        payment_where = []
        if as_of is not None:
            payment_where.append(
                or_(Y.c.run_as_of == as_of, (Y.c.status.in_(PENDING)) & (Y.c.due_on <= as_of))
            )
        payments: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        paid_rupiah: dict[str, int] = defaultdict(int)
        for benefit, k, status, reason, n, amount in session.execute(
            select(
                Y.c.benefit,
                Y.c.installment,
                Y.c.status,
                Y.c.reason,
                func.count(),
                func.coalesce(func.sum(Y.c.amount), 0),
            )
            .where(*payment_where)
            .group_by(Y.c.benefit, Y.c.installment, Y.c.status, Y.c.reason)
        ):
            row = payments[benefit].setdefault(
                str(k),
                {
                    "due": 0,
                    "paid": 0,
                    "stopped": {},
                    "failed": {},
                    "conflict": 0,
                    "pending": 0,
                    "rupiah_paid": 0,
                },
            )
            row["due"] += n
            if status == "PAID":
                row["paid"] += n
                row["rupiah_paid"] += int(amount)
                paid_rupiah[benefit] += int(amount)
            elif status == "STOPPED":
                row["stopped"][reason or "?"] = row["stopped"].get(reason or "?", 0) + n
            elif status == "FAILED":
                row["failed"][reason or "?"] = row["failed"].get(reason or "?", 0) + n
            elif status == "CONFLICT":
                row["conflict"] += n
            else:
                row["pending"] += n
        before_exclusion = session.execute(
            select(func.count(), func.coalesce(func.sum(Y.c.amount), 0))
            .select_from(Y.join(P, P.c.registrant_id == Y.c.registrant_id))
            .where(P.c.state == LifecycleState.STOPPED.value, Y.c.status == "PAID", *payment_where)
        ).one()
        feeds = {
            row.platform: {
                "events": row.events,
                "duplicates": row.duplicates,
                "unreadable": row.unreadable,
            }
            for row in session.execute(select(C))
        }
        run = None
        if as_of is not None:
            r = session.execute(select(RUN).where(RUN.c.as_of == as_of)).first()
            if r is not None:
                run = {"status": r.status, "reruns": r.reruns, "sign_off": r.sign_off}
    participants = sum(states.values())
    conservation_ok = participants == credited or as_of is not None
    for rows in payments.values():
        for row in rows.values():
            settled = (
                row["paid"]
                + sum(row["stopped"].values())
                + sum(row["failed"].values())
                + row["conflict"]
                + row["pending"]
            )
            conservation_ok = conservation_ok and settled == row["due"]
    return {
        "as_of": as_of.isoformat() if as_of else None,
        "run": run,
        "credited": int(credited),
        "participants": participants,
        "bought_in_time": int(bought),
        "completed_training": int(trained),
        "rupiah_credited": int(credited_rupiah),
        "states": states,
        "reasons": dict(reasons),
        "revoked": revoked,
        "rupiah_returned": sum(v["rupiah_returned"] for v in revoked.values()),
        "card_used_at_issuer": int(card_used),
        "late_purchases": int(late),
        "payments": {b: dict(sorted(v.items())) for b, v in sorted(payments.items())},
        "rupiah_paid": dict(sorted(paid_rupiah.items())),
        "paid_before_exclusion": {
            "count": int(before_exclusion[0]),
            "rupiah": int(before_exclusion[1]),
        },
        "unmatched_events": int(unmatched),
        "completions_without_purchase": int(orphans),
        "feeds": feeds,
        "surveys": surveys,
        "conservation_ok": conservation_ok,
    }


def survey_summary(session, as_of: date | None = None) -> dict[str, Any]:
    """Survey answers as counts only: answered per survey, the distribution of each fixed
    choice, and how many left a comment. Answers are personal data: nothing else of them
    leaves this function (no NIK, no text)."""
    where = []
    if as_of is not None:
        where.append(S.c.answered_at <= end_of_day_utc(as_of))
    answered: dict[str, int] = {}
    choices: dict[str, dict[str, int]] = {
        name: {_choice_key(c): 0 for c in values} for name, values in SURVEY_CHOICES.items()
    }
    comments = 0
    for survey, answers_json in session.execute(
        select(S.c.survey, S.c.answers_json).where(*where).order_by(S.c.survey)
    ):
        answered[str(survey)] = answered.get(str(survey), 0) + 1
        try:
            answers = orjson.loads(answers_json)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(answers, dict):
            continue
        for name in SURVEY_CHOICES:
            value = answers.get(name)
            if survey_choice_ok(name, value):
                choices[name][_choice_key(value)] += 1
        if isinstance(answers.get("comment"), str) and answers["comment"].strip():
            comments += 1
    return {
        "answered": answered,
        "answered_total": sum(answered.values()),
        "choices": choices,
        "with_comment": comments,
    }


def _choice_key(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def lifecycle_of(sessions: SessionFactory, registrant_ids: list[int]) -> list[dict[str, Any]]:
    """`explain --nik`: each participant's lifecycle: state, dates, events used, payments."""
    out = []
    with sessions() as session:
        for row in session.execute(select(P).where(P.c.registrant_id.in_(registrant_ids))):
            events = [
                {
                    "platform": e.platform,
                    "event_id": e.event_id,
                    "type": e.type,
                    "course_id": e.course_id,
                    "price": e.price,
                    "at": e.at.isoformat() + "Z",
                }
                for e in session.execute(
                    select(E).where(E.c.card_number == row.card_number).order_by(E.c.at)
                )
            ]
            payments = [
                {
                    "benefit": y.benefit,
                    "installment": y.installment,
                    "amount": int(y.amount),
                    "due_on": y.due_on.isoformat(),
                    "key": y.idempotency_key,
                    "status": y.status,
                    "reason": y.reason,
                    "checked_on": y.checked_on.isoformat() if y.checked_on else None,
                    "checks": y.checks_json,
                    "transfer_id": y.transfer_id,
                }
                for y in session.execute(
                    select(Y)
                    .where(Y.c.registrant_id == row.registrant_id)
                    .order_by(Y.c.benefit, Y.c.installment)
                )
            ]
            out.append(
                {
                    "wave_id": row.wave_id,
                    "state": row.state,
                    "reason": row.reason,
                    "state_on": row.state_on.isoformat(),
                    "credited_on": row.credited_on.isoformat(),
                    "deadline_on": row.deadline_on.isoformat(),
                    "first_purchase_on": _iso(row.first_purchase_on),
                    "first_completion_on": _iso(row.first_completion_on),
                    "balance_left": int(row.balance_left),
                    "revocation": {
                        "reason": row.revoke_reason,
                        "status": row.revoke_status,
                        "amount_returned": row.amount_returned,
                        "on": _iso(row.revoked_on),
                    },
                    "events": events,
                    "payments": payments,
                }
            )
    return out


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def participant_ids(sessions: SessionFactory, wave_id: int, nik: str) -> list[int]:
    """The participant rows of a NIK in a wave (at most one: the credited registrant)."""
    with sessions() as session:
        return list(
            session.execute(
                select(P.c.registrant_id).where(P.c.wave_id == wave_id, P.c.nik == nik)
            ).scalars()
        )
