"""Read-side of a wave: report, export, explain and reconciliation, from the database."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlmodel import Session

from models.db import SessionFactory
from models.enums import (
    LedgerStatus,
    MessageStatus,
    ReasonCode,
    Stage,
    State,
    reasons_of,
    stage_of_reason,
)
from models.queries import R, load_wave
from models.tables import LedgerEntry, Message, Registrant
from partners.client import PartnerError
from partners.issuer import IssuerClient
from rules.money import BENEFIT, statement_reference
from rules.outcomes import outcome_of
from rules.signature import Approvers

L = LedgerEntry.__table__  # type: ignore[attr-defined]
M = Message.__table__  # type: ignore[attr-defined]

# Reason groups by stage: data next to ReasonCode (models/enums.py, REASON_STAGE).
INTAKE_REASONS = reasons_of(Stage.INTAKE)
LOCAL_REASONS = reasons_of(Stage.LOCAL_ELIGIBILITY)
IDENTITY_REASONS = reasons_of(Stage.IDENTITY)
# The funnel's rows of rejections, by the stage that gives them.
_FUNNEL_STEP = {
    Stage.INTAKE: "intake",
    Stage.LOCAL_ELIGIBILITY: "local",
    Stage.IDENTITY: "identity",
    Stage.SCREENING: "screening",
}


def _state_rows(session: Session, wave_id: int):
    """The wave's registrants counted by (state, reason, failed at a partner, partner),
    from indexes, not rows: (state, reason) from ix_registrant_wave_state_reason, and the
    few a partner failure left pending from the partial ix_registrant_pending."""
    by_reason = session.execute(
        select(R.c.state, R.c.reason, func.count())
        .where(R.c.wave_id == wave_id)
        .group_by(R.c.state, R.c.reason)
    ).all()
    # SQLite, without statistics, would walk the state index and read every row: name
    # the partial index there.
    indexed = (
        "INDEXED BY ix_registrant_pending " if session.get_bind().dialect.name == "sqlite" else ""
    )
    failed = session.execute(
        text(
            f"SELECT state, reason, pending_partner, count(*) FROM registrant {indexed}"
            "WHERE wave_id = :wave AND pending_stage IS NOT NULL "
            "GROUP BY state, reason, pending_partner"
        ),
        {"wave": wave_id},
    ).all()
    failed_in: Counter = Counter()
    for state, reason, partner, n in failed:
        failed_in[(state, reason)] += n
        yield state, reason, True, partner, n
    for state, reason, n in by_reason:
        rest = n - failed_in[(state, reason)]
        if rest:
            yield state, reason, False, None, rest


def rejected_at_intake(session: Session, wave_id: int) -> dict[str, int]:
    """The wave's rows intake refused, by reason (ix_registrant_wave_state_reason)."""
    rows = session.execute(
        select(R.c.reason, func.count())
        .where(
            R.c.wave_id == wave_id,
            R.c.state == State.REJECTED.value,
            R.c.reason.in_(sorted(INTAKE_REASONS)),
        )
        .group_by(R.c.reason)
    ).all()
    return {str(reason): int(n) for reason, n in sorted(rows)}


def selected_by_round(session: Session, wave_id: int) -> dict[str, int]:
    """The funnel's `selected` split by how they got their seat (ix_registrant_drawn):
    in the draw (round 0), by backfill (rounds 1, 2, ...: seats freed at the accounts
    stage or by a prior recipient), or by a quota raise (round -1)."""
    rounds = session.execute(
        select(R.c.draw_round, func.count())
        .where(R.c.wave_id == wave_id, R.c.draw_round.is_not(None))
        .group_by(R.c.draw_round)
    ).all()
    split = {"in_draw": 0, "backfilled": 0, "quota_raise": 0}
    for round_no, n in rounds:
        key = "in_draw" if round_no == 0 else "backfilled" if round_no > 0 else "quota_raise"
        split[key] += int(n)
    return split


def _counted(session: Session, wave_id: int, *where) -> int:
    return session.execute(select(func.count()).where(R.c.wave_id == wave_id, *where)).scalar_one()


def _wave_state(session: Session, wave_id: int) -> dict[str, Any]:
    """The funnel, outcomes, reasons, pending and states: one scan of the registrants."""
    outcomes: Counter = Counter()
    reasons: Counter = Counter()
    pending: Counter = Counter()
    pending_by_partner: Counter = Counter()
    by_state: Counter = Counter()
    total = 0
    for state, reason, failed, partner, n in _state_rows(session, wave_id):
        total += n
        by_state[state] += n
        outcome, shown = outcome_of(state, reason, "x" if failed else None)
        outcomes[str(outcome)] += n
        if outcome in ("REJECTED", "NOT_SELECTED") and shown:
            reasons[shown] += n
        if outcome == "PENDING":
            pending[str(shown)] += n
            pending_by_partner[f"{shown}:{partner or 'not-attempted'}"] += n
    rejected_at: Counter[str] = Counter()
    for reason, n in reasons.items():
        step = _FUNNEL_STEP.get(stage_of_reason(reason))  # type: ignore[arg-type]
        if step is not None:
            rejected_at[step] += n
    intake_accepted = total - rejected_at["intake"]
    locally_eligible = intake_accepted - rejected_at["local"] - by_state[State.AWAIT_LOCAL]
    identity_verified = locally_eligible - rejected_at["identity"] - by_state[State.AWAIT_IDENTITY]
    eligible = identity_verified - rejected_at["screening"] - by_state[State.AWAIT_SCREENING]
    # Ever selected, and of them ever confirmed (a card number): the drawn are few and
    # indexed (ix_registrant_drawn).
    drawn = R.c.draw_round.is_not(None)
    selected = _counted(session, wave_id, drawn)
    confirmed = _counted(session, wave_id, drawn, R.c.card_number.is_not(None))
    messages = dict(
        session.execute(
            select(M.c.status, func.count()).where(M.c.wave_id == wave_id).group_by(M.c.status)
        ).all()
    )
    return {
        "registrants": total,
        "funnel": {
            "registered": total,
            "intake_accepted": intake_accepted,
            "locally_eligible": locally_eligible,
            "identity_verified": identity_verified,
            "eligible": eligible,
            "selected": selected,
            "confirmed": confirmed,
            "credited": by_state[State.CREDITED],
        },
        "outcomes": dict(sorted(outcomes.items())),
        "reasons": dict(sorted(reasons.items())),
        "pending": dict(sorted(pending.items())),
        "pending_by_partner": dict(sorted(pending_by_partner.items())),
        "messages": dict(sorted(messages.items())),
        "states": {str(k): int(v) for k, v in sorted(by_state.items())},
    }


def _money_state(session: Session, wave_id: int) -> dict[str, Any]:
    """The ledger by status, the amount credited, and who waits for a credit."""
    ledger = dict(
        session.execute(
            select(L.c.status, func.coalesce(func.sum(L.c.amount), 0))
            .where(L.c.wave_id == wave_id)
            .group_by(L.c.status)
        ).all()
    )
    ledger_counts = dict(
        session.execute(
            select(L.c.status, func.count()).where(L.c.wave_id == wave_id).group_by(L.c.status)
        ).all()
    )
    # Waiting for their credit: a credit written but not answered yet (ledger PENDING), or
    # a confirmed participant with no credit row yet. A credit the issuer refused
    # (ledger REJECTED, registrant CREDIT_REJECTED) is not waiting: it needs a person.
    has_credit_row = select(L.c.id).where(L.c.wave_id == R.c.wave_id, L.c.nik == R.c.nik).exists()
    unwritten = session.execute(
        select(func.count()).where(
            R.c.wave_id == wave_id,
            R.c.draw_round.is_not(None),  # the drawn index: card holders are all drawn
            R.c.card_number.is_not(None),
            ~has_credit_row,
        )
    ).scalar_one()
    waiting_for_credit = int(ledger_counts.get(LedgerStatus.PENDING.value, 0)) + int(unwritten)
    return {
        "credited_amount": int(ledger.get(LedgerStatus.APPLIED.value, 0)),
        "waiting_for_credit": waiting_for_credit,
        "ledger": {k: int(v) for k, v in sorted(ledger_counts.items())},
    }


def stage_state(session: Session, wave_id: int) -> dict[str, Any]:
    """What a stage artifact shows of the wave (stage_view): `wave_report`'s funnel,
    reasons, pending, states and money, without its sign-off read (which hashes the
    confirmed list)."""
    return {**_wave_state(session, wave_id), **_money_state(session, wave_id)}


def wave_report(
    session: Session, wave_id: int, *, approvers: Approvers | None = None
) -> dict[str, Any]:
    wave = load_wave(session, wave_id)
    state = _wave_state(session, wave_id)
    money = _money_state(session, wave_id)
    return {
        "wave_id": wave_id,
        "status": wave.status,
        "quota": wave.quota,
        "registrants": state["registrants"],
        "lottery_seed_sha256": wave.lottery_seed_sha256,
        "lottery_seed": wave.lottery_seed if wave.drawn_at is not None else None,
        "funnel": state["funnel"],
        "outcomes": state["outcomes"],
        "reasons": state["reasons"],
        "pending": state["pending"],
        "pending_by_partner": state["pending_by_partner"],
        "draw": {
            "drawn": wave.drawn_at is not None,
            "pool_size": wave.pool_size,
            "pool_digest": wave.pool_digest,
            "without_pending": wave.draw_without_pending,
            # the funnel's selected: in the draw, backfilled, added by a quota raise
            "selected": selected_by_round(session, wave_id),
        },
        **money,
        "messages": state["messages"],
        "states": state["states"],
        "training_balance": wave.training_balance,
        "announced_at": _iso(wave.announced_at),
        "sign_off": _sign_off(session, wave_id, approvers),
    }


def _sign_off(session: Session, wave_id: int, approvers: Approvers | None) -> dict[str, Any]:
    """interfaces.md: `{"required", "approvals": [{"by", "at"}]}`, the approvals of the
    wave as it stands that count (voided, unsigned under an approvers file, or missing
    from the audit trail: not listed), whether it waits for more, and whether approvals
    are signed (an approvers file, `approvers`; None: they are unsigned)."""
    from readmodels.signoff import sign_off_status

    status = sign_off_status(session, wave_id, approvers=approvers)
    return {
        k: status[k]
        for k in ("required", "approvals", "approved", "waiting", "digest", "signed")
        if k in status
    }


_STAGE_REJECTS: dict[str, Any] = {
    stage.value: (lambda r, stage=stage: stage_of_reason(r) == stage)
    for stage in (
        Stage.INTAKE,
        Stage.LOCAL_ELIGIBILITY,
        Stage.IDENTITY,
        Stage.SCREENING,
        Stage.DRAW,
        Stage.ACCOUNTS,
        Stage.ROLLOUT,
    )
}
_STAGE_WAITING = {
    "local-eligibility": State.AWAIT_LOCAL,
    "identity": State.AWAIT_IDENTITY,
    "screening": State.AWAIT_SCREENING,
    "accounts": State.SELECTED,
}
_STAGE_PENDING = {
    "local-eligibility": "PENDING_ELIGIBILITY",
    "identity": "PENDING_IDENTITY",
    "screening": "PENDING_SCREENING",
    "accounts": "PENDING_ACCOUNT",
    "rollout": "PENDING_ROLLOUT",
}


def stage_view(report: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    """The wave's state at one stage, from a `wave_report`: what reached it, what it
    rejected (by reason), what waits there (by partner) and what passed. Never empty:
    it is what the stage artifact shows, whether or not this run had work for it."""
    f, states = report["funnel"], report.get("states", {})
    rows: list[dict[str, Any]] = []

    def row(what: str, n: int) -> None:
        rows.append({"wave state": what, "count": int(n)})

    reached = {
        "intake": f["registered"],
        "local-eligibility": f["intake_accepted"],
        "identity": f["locally_eligible"],
        "screening": f["identity_verified"],
        "draw": f["eligible"],
        "accounts": f["selected"],
        "rollout": f["confirmed"],
    }
    if stage == "announce":
        row("participants credited", f["credited"])
        for status, n in sorted(report.get("messages", {}).items()):
            row(f"messages {status}", n)
        return rows
    row("registered" if stage == "intake" else "reached this stage", reached[stage])
    rejects = _STAGE_REJECTS[stage]
    for reason, n in sorted(report["reasons"].items()):
        if rejects(reason):
            row(f"rejected {reason}" if stage != "draw" else f"not selected {reason}", n)
    waiting_state = _STAGE_WAITING.get(stage)
    if waiting_state is not None:
        row("waiting at this stage", states.get(waiting_state.value, 0))
    pending_reason = _STAGE_PENDING.get(stage)
    for key, n in sorted(report.get("pending_by_partner", {}).items()):
        reason, _, partner = key.partition(":")
        if reason == pending_reason:
            row(f"pending on {partner}", n)
    if stage == "draw":
        row("selected", f["selected"])
        row("waitlisted", states.get(State.WAITLISTED.value, 0))
        row("eligible, not drawn yet", states.get(State.ELIGIBLE.value, 0))
    elif stage == "rollout":
        row("credited", f["credited"])
        row("waiting for their credit", report.get("waiting_for_credit", 0))
        row("credited amount (Rp)", report["credited_amount"])
    else:
        passed = {
            "intake": f["intake_accepted"],
            "local-eligibility": f["locally_eligible"],
            "identity": f["identity_verified"],
            "screening": f["eligible"],
            "accounts": f["confirmed"],
        }
        row("passed", passed[stage])
    return rows


# interfaces.md: a written cell that would begin with one of these is prefixed with "'",
# so that a spreadsheet never runs it as a formula; no other value changes.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_line(values: Any) -> str:
    """One RFC 4180 row ending in "\n": like csv.writer's minimal quoting, except that a
    cell holding a bare "\r" is quoted too (csv.writer quotes only the characters of its
    own line ending, so such a cell would break the row in two for a spreadsheet)."""
    cells = []
    for value in values:
        text = csv_cell(value)
        if '"' in text or "," in text or "\n" in text or "\r" in text:
            text = '"' + text.replace('"', '""') + '"'
        cells.append(text)
    return ",".join(cells) + "\n"


def export_outcomes(sessions: SessionFactory, wave_id: int, out: str | Path) -> int:
    """Writes `line,registration_id,nik,outcome,reason`, one row per data row, in line order."""
    n = 0
    with sessions() as session, open(out, "w", newline="", encoding="utf-8") as fh:
        load_wave(session, wave_id)
        fh.write(csv_line(["line", "registration_id", "nik", "outcome", "reason"]))
        rows = session.execute(
            select(R.c.line, R.c.registration_id, R.c.nik, R.c.state, R.c.reason, R.c.pending_stage)
            .where(R.c.wave_id == wave_id)
            .order_by(R.c.line)
            .execution_options(yield_per=50_000)
        )
        for r in rows:
            outcome, reason = outcome_of(r.state, r.reason, r.pending_stage)
            fh.write(csv_line((r.line, r.registration_id or "", r.nik or "", outcome, reason)))
            n += 1
    return n


def explain(session: Session, wave_id: int, nik: str) -> dict[str, Any] | None:
    """One registrant's path through the wave: every check, its answer and when."""
    load_wave(session, wave_id)
    rows = list(
        session.scalars(
            select(Registrant)
            .where(Registrant.wave_id == wave_id, Registrant.nik == nik)  # type: ignore[arg-type]
            .order_by(Registrant.line)  # type: ignore[arg-type]
        )
    )
    if not rows:
        return None
    # The row that decides is the one that was not a duplicate; others are listed too.
    main = next((r for r in rows if r.reason != ReasonCode.DUPLICATE_NIK), rows[0])
    outcome, reason = outcome_of(main.state, main.reason, main.pending_stage)
    checks: list[dict[str, Any]] = []
    intake_reason = main.reason if main.reason in INTAKE_REASONS else None
    checks.append({"stage": "intake", "result": intake_reason or "ACCEPTED", "line": main.line})
    if intake_reason is None:
        local = (
            main.reason
            if main.reason in LOCAL_REASONS
            else (None if main.state != State.AWAIT_LOCAL else "NOT_CHECKED")
        )
        checks.append({"stage": "local-eligibility", "result": local or "PASSED"})
    if main.identity_answer:
        checks.append(
            {
                "stage": "identity",
                "partner": "registry",
                "answer": json.loads(main.identity_answer),
                "at": _iso(main.identity_at),
                "result": main.reason if main.reason in IDENTITY_REASONS else "VERIFIED",
            }
        )
    if main.screening_answers:
        checks.append(
            {
                "stage": "screening",
                "answers": json.loads(main.screening_answers),
                "at": _iso(main.screening_at),
                "priority": bool(main.priority),
                "result": main.reason
                if (main.reason or "").startswith("EXCLUDED_")
                else (
                    "ELIGIBLE"
                    if main.draw_key and main.state != State.AWAIT_SCREENING
                    else "WAITING"
                ),
            }
        )
    if main.drawn_at:
        checks.append(
            {
                "stage": "draw",
                "key": main.draw_key,
                "round": main.draw_round,
                "at": _iso(main.drawn_at),
                "result": "SELECTED"
                if main.draw_round is not None
                else (main.reason or main.state),
            }
        )
    if main.account_status:
        checks.append(
            {
                "stage": "accounts",
                "partner": main.payout_provider,
                "answer": main.account_status,
                "at": _iso(main.account_at),
            }
        )
    led = session.execute(select(L).where(L.c.wave_id == wave_id, L.c.nik == nik)).first()
    if led is not None:
        checks.append(
            {
                "stage": "rollout",
                "partner": "card-issuer",
                "status": led.status,
                "amount": led.amount,
                "transfer_id": led.transfer_id,
                "idempotency_key": led.idempotency_key,
                "at": _iso(led.updated_at),
            }
        )
    msg = session.execute(select(M).where(M.c.wave_id == wave_id, M.c.nik == nik)).first()
    if msg is not None:
        checks.append(
            {
                "stage": "announce",
                "partner": "notifier",
                "status": msg.status,
                "reason": msg.reason,
                "at": _iso(msg.sent_at),
            }
        )
    if main.pending_stage:
        checks.append(
            {
                "stage": "pending",
                "waiting_at": main.pending_stage,
                "partner": main.pending_partner,
                "error": main.pending_error,
                "at": _iso(main.pending_at),
            }
        )
    return {
        "wave_id": wave_id,
        "nik": nik,
        "line": main.line,
        "registration_id": main.registration_id,
        "outcome": str(outcome),
        "reason": str(reason),
        "card_number": main.card_number,
        "checks": checks,
        "other_lines": [{"line": r.line, "reason": r.reason} for r in rows if r is not main],
    }


def _iso(value) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def reconcile(sessions: SessionFactory, issuer: IssuerClient, wave_id: int) -> dict[str, Any]:
    """The ledger's applied credits against the issuer's statement for the wave."""
    with sessions() as session:
        wave = load_wave(session, wave_id)
        applied = {
            r.idempotency_key: int(r.amount)
            for r in session.execute(
                select(L.c.idempotency_key, L.c.amount).where(
                    L.c.wave_id == wave_id,
                    L.c.benefit == BENEFIT,
                    L.c.status == LedgerStatus.APPLIED.value,
                )
            )
        }
        refused = dict(
            session.execute(
                select(L.c.status, func.count())
                .where(
                    L.c.wave_id == wave_id,
                    L.c.status.in_([LedgerStatus.REJECTED.value, LedgerStatus.CONFLICT.value]),
                )
                .group_by(L.c.status)
            ).all()
        )
        credited = session.execute(
            select(func.count()).where(R.c.wave_id == wave_id, R.c.state == State.CREDITED.value)
        ).scalar_one()
        paid_twice = paid_more_than_once(session)
    seen: Counter = Counter()
    statement_amount = statement_count = 0
    unknown = mismatched = duplicated = 0
    try:
        for entry in issuer.statement(statement_reference(wave_id)):
            statement_count += 1
            statement_amount += entry.amount
            seen[entry.idempotency_key] += 1
            if entry.idempotency_key not in applied:
                unknown += 1
            elif seen[entry.idempotency_key] > 1:
                duplicated += 1
            elif applied[entry.idempotency_key] != entry.amount:
                mismatched += 1
    except PartnerError as exc:
        # An issuer that fails (down, refusing our key, breaker open) is a partner failure:
        # the check is reported as not done (ok false), never a crash of the rollout stage.
        failure = exc.failure
        return {
            "wave_id": wave_id,
            "ledger_count": len(applied),
            "ledger_amount": sum(applied.values()),
            "statement_count": None,
            "statement_amount": None,
            "missing_in_statement": None,
            "unknown_in_statement": None,
            "amount_mismatches": None,
            "duplicates_in_statement": None,
            "credited_count": credited,
            "expected_amount": credited * wave.training_balance,
            "refused": {k: int(v) for k, v in refused.items()},
            "statement_error": f"{failure.partner_id}: {failure.error_class}: {failure.detail}",
            "paid_more_than_once_in_program": paid_twice,
            "ok": False,
        }
    missing = sum(1 for key in applied if key not in seen)
    ledger_amount = sum(applied.values())
    expected_total = credited * wave.training_balance
    ok = (
        missing == 0
        and unknown == 0
        and mismatched == 0
        and duplicated == 0
        and ledger_amount == statement_amount == expected_total
        and len(applied) == credited
        and paid_twice == 0
    )
    return {
        "wave_id": wave_id,
        "ledger_count": len(applied),
        "ledger_amount": ledger_amount,
        "statement_count": statement_count,
        "statement_amount": statement_amount,
        "missing_in_statement": missing,
        "unknown_in_statement": unknown,
        "amount_mismatches": mismatched,
        "duplicates_in_statement": duplicated,
        "credited_count": credited,
        "expected_amount": expected_total,
        "refused": {k: int(v) for k, v in refused.items()},
        "paid_more_than_once_in_program": paid_twice,
        "ok": ok,
    }


def paid_more_than_once(session: Session) -> int:
    """NIKs with more than one applied credit of a benefit, over every wave of the program.

    Paid once in the program (wave-rules.md): the database refuses a second live credit,
    so this is 0 unless a database from before that rule already paid someone twice; any
    wave's reconciliation then says so (and is not ok) until a person has dealt with it.
    """
    twice = (
        select(L.c.nik)
        .where(L.c.status == LedgerStatus.APPLIED.value)
        .group_by(L.c.nik, L.c.benefit)
        .having(func.count() > 1)
        .subquery()
    )
    return session.execute(select(func.count()).select_from(twice)).scalar_one()


def work_left(session: Session, wave_id: int) -> dict[str, int]:
    """What keeps a wave open: registrants not final, messages not sent."""
    by_state = dict(
        session.execute(
            select(R.c.state, func.count())
            .where(
                R.c.wave_id == wave_id,
                R.c.state.in_(
                    [
                        State.AWAIT_LOCAL.value,
                        State.AWAIT_IDENTITY.value,
                        State.AWAIT_SCREENING.value,
                        State.ELIGIBLE.value,
                        State.SELECTED.value,
                        State.CONFIRMED.value,
                    ]
                ),
            )
            .group_by(R.c.state)
        ).all()
    )
    queued = session.execute(
        select(func.count()).where(M.c.wave_id == wave_id, M.c.status == MessageStatus.QUEUED.value)
    ).scalar_one()
    if queued:
        by_state["SMS_QUEUED"] = queued
    return by_state
