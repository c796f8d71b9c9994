"""Rollout: credit each confirmed participant's training balance exactly once.

The ledger row, with its idempotency key, is committed before the issuer is called; a
credit whose answer was lost is settled by asking the issuer about the same key, and
only re-sent under that key. The SMS is queued in the transaction that records the credit.
"""

from __future__ import annotations

import json

from sqlalchemy import insert, select, text, update

from models.db import SessionFactory
from models.enums import LedgerStatus, MessageStatus, PendingReason, ReasonCode, Stage, State
from models.tables import LIVE_CREDIT, LedgerEntry, Message
from partners.client import PartnerFailure
from partners.issuer import CreditResult, IssuerClient
from readmodels.report_types import BatchReport
from rules.money import (
    BENEFIT,
    credit_idempotency_key,
    message_key,
    require_rupiah,
    statement_reference,
)
from rules.signature import Approvers
from tasks.common import (
    CLEAR_PENDING,
    R,
    bulk_update,
    load_wave,
    pending_change,
    rows_in_range,
    utcnow,
)
from tasks.signoff import credits_allowed

L = LedgerEntry.__table__  # type: ignore[attr-defined]
M = Message.__table__  # type: ignore[attr-defined]
SMS_TEMPLATE = "balance_credited"


class LedgerWriteError(RuntimeError):
    """A credit the ledger refused for another reason than another wave's live credit."""


def credit_training_balance_batch(
    sessions: SessionFactory,
    issuer: IssuerClient,
    wave_id: int,
    id_range: tuple[int, int],
    *,
    approvers: Approvers | None = None,
) -> dict:
    """Credits the batch's confirmed participants once sign-off allows it; `approvers`
    (the approvers file, None: approvals unsigned) is what the gate checks signatures with."""
    report = BatchReport(Stage.ROLLOUT.value)
    now = utcnow()
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        amount = require_rupiah(wave.training_balance)
        rows = rows_in_range(
            session,
            wave_id,
            [State.CONFIRMED],
            id_range,
            [R.c.id, R.c.nik, R.c.card_number, R.c.phone],
        )
        if not rows:
            return report.as_dict()
        if not credits_allowed(session, wave, approvers):
            # Sign-off before money (wave-rules.md): nothing is written, nothing is sent.
            report.counts["awaiting_sign_off"] += len(rows)
            return report.as_dict()
        people = {r.nik: r for r in rows}
        conn = session.connection()
        ledger = _own_credits(conn, wave_id, list(people))
        # Paid once in the program: the ledger decides. A NIK with a live credit of
        # another wave is that wave's to pay (two waves can both confirm a NIK); the unique
        # index on live credits settles a race between two waves' batches.
        elsewhere = _live_credits_elsewhere(conn, wave_id, [n for n in people if n not in ledger])
        missing = [
            {
                "wave_id": wave_id,
                "nik": nik,
                "benefit": BENEFIT,
                "idempotency_key": credit_idempotency_key(wave_id, nik),
                "card_number": r.card_number,
                "amount": amount,
                "status": LedgerStatus.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for nik, r in people.items()
            if nik not in ledger and nik not in elsewhere
        ]
        if missing:
            conn.execute(_insert_unless_held(conn), missing)
        entries = _own_credits(conn, wave_id, list(people))
        # Whoever has no credit of this wave now lost it to another wave: never sent.
        unwritten = [n for n in people if n not in entries]
        held = elsewhere | _live_credits_elsewhere(conn, wave_id, unwritten)
        if any(n not in held for n in unwritten):
            # Not another wave's credit: a unique key (the idempotency key) held by some
            # other row. A program fault: nothing of the batch is written or sent.
            raise LedgerWriteError(
                f"wave {wave_id}: {sum(n not in held for n in unwritten)} credits could not "
                "be written to the ledger: their idempotency key is held by another row"
            )
        prior = [r for nik, r in people.items() if nik not in entries]
        if prior:
            bulk_update(
                session,
                [
                    {
                        "_id": r.id,
                        "state": State.REJECTED.value,
                        "reason": ReasonCode.PRIOR_RECIPIENT.value,
                        "decided_at": now,
                        **CLEAR_PENDING,
                    }
                    for r in prior
                ],
                expect_state=[State.CONFIRMED.value],
            )
            report.counts[ReasonCode.PRIOR_RECIPIENT.value] += len(prior)
            for r in prior:
                del people[r.nik]
    # Settled before (a crash between the issuer's answer and ours is impossible: both are
    # written together), except CONFLICT, which waits for a person.
    results: dict[str, CreditResult | PartnerFailure] = {}
    to_send = []
    for e in entries.values():
        if e.status == LedgerStatus.CONFLICT:
            report.counts["conflict_waiting"] += 1
            continue
        if e.status != LedgerStatus.PENDING:
            results[e.idempotency_key] = CreditResult(
                e.status, e.transfer_id, e.issuer_reason, True
            )
            continue
        if e.attempts > 0:
            # The issuer may have applied it and the answer been lost: ask before re-sending.
            found = issuer.lookup(e.idempotency_key)
            if found is not None:
                results[e.idempotency_key] = found
                continue
        to_send.append(e)
    if to_send:
        with sessions() as session, session.begin():
            session.connection().execute(
                update(L)
                .where(L.c.id.in_([e.id for e in to_send]))
                .values(attempts=L.c.attempts + 1, updated_at=now)
            )
        answered = issuer.credit(
            [
                {
                    "idempotency_key": e.idempotency_key,
                    "card_number": e.card_number,
                    "nik": e.nik,
                    "amount": e.amount,
                    "currency": "IDR",
                    "reference": statement_reference(wave_id),
                }
                for e in to_send
            ]
        )
        results.update(answered)
    _apply_credit_results(sessions, wave_id, entries, people, results, report)
    return report.as_dict()


def _own_credits(conn, wave_id: int, niks: list[str]) -> dict:
    return {
        e.nik: e
        for e in conn.execute(
            select(L).where(L.c.wave_id == wave_id, L.c.benefit == BENEFIT, L.c.nik.in_(niks))
        )
    }


def _live_credits_elsewhere(conn, wave_id: int, niks: list[str]) -> set[str]:
    """Those of `niks` with a pending or applied credit of another wave (the partial unique
    index answers it: its WHERE is written the same way here)."""
    if not niks:
        return set()
    return set(
        conn.execute(
            select(L.c.nik).where(
                L.c.nik.in_(niks),
                L.c.benefit == BENEFIT,
                text(LIVE_CREDIT),
                L.c.wave_id != wave_id,
            )
        ).scalars()
    )


def _insert_unless_held(conn):
    """INSERT that skips a row another live credit of the NIK (any wave) already holds;
    any other unique key (the idempotency key, this wave's own credit) still raises."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(L).on_conflict_do_nothing(
        index_elements=[L.c.nik, L.c.benefit], index_where=text(LIVE_CREDIT)
    )


def _apply_credit_results(sessions, wave_id, entries, people, results, report) -> None:
    now = utcnow()
    ledger_changes, person_changes, messages = [], [], []
    for nik, e in entries.items():
        result = results.get(e.idempotency_key)
        if result is None:
            continue
        person = people[nik]
        if isinstance(result, PartnerFailure):
            report.fail(result)
            report.counts[PendingReason.PENDING_ROLLOUT.value] += 1
            ledger_changes.append(
                {"_id": e.id, "last_error": result.error_class, "updated_at": now}
            )
            person_changes.append(
                pending_change(
                    person.id,
                    PendingReason.PENDING_ROLLOUT,
                    result.partner_id,
                    f"{result.error_class}: {result.detail}",
                    now,
                )
            )
            continue
        ledger_changes.append(
            {
                "_id": e.id,
                "status": result.status,
                "transfer_id": result.transfer_id,
                "issuer_reason": result.reason,
                "last_error": None,
                "updated_at": now,
            }
        )
        if result.status == LedgerStatus.APPLIED:
            report.counts["credited"] += 1
            person_changes.append(
                {
                    "_id": person.id,
                    "state": State.CREDITED.value,
                    "credited_at": now,
                    "decided_at": now,
                    **CLEAR_PENDING,
                }
            )
            messages.append(
                {
                    "wave_id": wave_id,
                    "nik": nik,
                    "idempotency_key": message_key(wave_id, nik, SMS_TEMPLATE),
                    "phone": person.phone,
                    "template": SMS_TEMPLATE,
                    "params_json": json.dumps({"card_number": e.card_number, "amount": e.amount}),
                    "status": MessageStatus.QUEUED.value,
                    "attempts": 0,
                    "created_at": now,
                }
            )
        elif result.status == LedgerStatus.REJECTED:
            report.counts[ReasonCode.CREDIT_REJECTED.value] += 1
            person_changes.append(
                {
                    "_id": person.id,
                    "state": State.REJECTED.value,
                    "reason": ReasonCode.CREDIT_REJECTED.value,
                    "decided_at": now,
                    **CLEAR_PENDING,
                }
            )
        else:  # CONFLICT: a program fault, a person must look at it.
            report.counts["conflict"] += 1
            report.fail(
                PartnerFailure(
                    "card-issuer",
                    "CreditConflict",
                    "idempotency key reused with a different body",
                    True,
                )
            )
            person_changes.append(
                pending_change(
                    person.id, PendingReason.PENDING_ROLLOUT, "card-issuer", "CreditConflict", now
                )
            )
    with sessions() as session, session.begin():
        conn = session.connection()
        if ledger_changes:
            bulk_update(session, ledger_changes, table=L)
        bulk_update(session, person_changes, expect_state=[State.CONFIRMED.value])
        if messages:
            existing = set(
                conn.execute(
                    select(M.c.idempotency_key).where(
                        M.c.idempotency_key.in_([m["idempotency_key"] for m in messages])
                    )
                ).scalars()
            )
            fresh = [m for m in messages if m["idempotency_key"] not in existing]
            if fresh:
                conn.execute(insert(M), fresh)
