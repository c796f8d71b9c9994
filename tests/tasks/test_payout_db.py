"""Paid once in the program, for incentives and surveys (lifecycle.md), in the database:
at most one live payment (due, sending, paid or conflict) per (NIK, benefit, installment)
whatever the wave; a CONFLICT counts as possibly paid; FAILED and STOPPED do not hold the
installment. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from models.tables import Payment

Y = Payment.__table__
NIK = "3171010190000001"
NOW = datetime(2027, 1, 1, 12, 0)


def payment(wave_id: int, status: str, installment: int = 1, benefit: str = "incentive") -> dict:
    return {
        "wave_id": wave_id,
        "registrant_id": wave_id * 100,
        "nik": NIK,
        "benefit": benefit,
        "installment": installment,
        "amount": 600_000,
        "due_on": date(2027, 1, 1),
        "idempotency_key": f"w{wave_id}:{NIK}:{benefit}:{installment}",
        "status": status,
        "attempts": 0,
        "created_at": NOW,
        "updated_at": NOW,
    }


def add(sessions, row: dict) -> None:
    with sessions() as session, session.begin():
        session.connection().execute(insert(Y), [row])


@pytest.mark.parametrize("live", ["DUE", "SENDING", "PAID", "CONFLICT"])
def test_a_live_payment_in_one_wave_blocks_the_same_installment_in_another(sessions, live):
    add(sessions, payment(1, live))
    with pytest.raises(IntegrityError):
        add(sessions, payment(2, "DUE"))
    add(sessions, payment(2, "DUE", installment=2))  # another installment: its own
    add(sessions, payment(3, "DUE", benefit="survey"))  # another benefit: its own


@pytest.mark.parametrize("settled", ["FAILED", "STOPPED"])
def test_a_failed_or_stopped_payment_does_not_hold_the_installment(sessions, settled):
    add(sessions, payment(1, settled))
    add(sessions, payment(2, "DUE"))


def test_one_wave_has_one_row_per_installment(sessions):
    add(sessions, payment(1, "FAILED"))
    row = payment(1, "DUE")
    row["idempotency_key"] += ":again"
    with pytest.raises(IntegrityError):
        add(sessions, row)


def test_make_due_skips_an_installment_another_wave_holds(sessions):
    """The set-based INSERT of what falls due leaves out a NIK whose installment another
    wave holds live, instead of failing the whole statement."""
    from sqlalchemy import func, select

    from models.tables import Participant
    from tasks.payout import make_due
    from tests.tasks.factories import make_wave

    make_wave(sessions, wave_id=1)
    make_wave(sessions, wave_id=2)
    P = Participant.__table__
    from models.tables import Registrant

    R = Registrant.__table__
    with sessions() as session, session.begin():
        conn = session.connection()
        for wave_id in (1, 2):
            rid = conn.execute(
                insert(R).values(
                    wave_id=wave_id,
                    line=2,
                    nik=NIK,
                    state="CREDITED",
                    payout_provider="wallet-a",
                    payout_account="1",
                    priority=False,
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(P),
                [
                    {
                        "registrant_id": rid,
                        "wave_id": wave_id,
                        "nik": NIK,
                        "card_number": f"card-{wave_id}",
                        "credited_amount": 1_000_000,
                        "credited_on": date(2026, 12, 1),
                        "deadline_on": date(2026, 12, 31),
                        "state": "TRAINED",
                        "state_on": date(2026, 12, 5),
                        "first_completion_on": date(2026, 12, 5),
                        "balance_left": 0,
                        "late_purchase": False,
                        "orphan_completions": 0,
                        "card_used_at_issuer": False,
                        "events_seen": 2,
                        "updated_at": NOW,
                    }
                ],
            )
    make_due(sessions, date(2026, 12, 6))
    with sessions() as session:
        rows = session.execute(
            select(Y.c.wave_id, func.count()).group_by(Y.c.wave_id).order_by(Y.c.wave_id)
        ).all()
    assert [tuple(r) for r in rows] == [(1, 1)]  # the first wave's; the second skipped
