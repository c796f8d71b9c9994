"""Payout accounts: each selected registrant's own payment partner confirms the account."""

from __future__ import annotations

from collections.abc import Mapping

from models.db import SessionFactory
from models.enums import PendingReason, ReasonCode, Stage, State
from partners.client import PartnerFailure
from partners.payment import PaymentClient
from readmodels.report_types import BatchReport
from rules.eligibility import account_reason
from rules.money import card_number_for
from tasks.common import CLEAR_PENDING, R, bulk_update, pending_change, rows_in_range, utcnow
from tasks.eligibility import participants_elsewhere

# A provider the partners file does not name cannot hold the account: the registrant
# is told ACCOUNT_NOT_FOUND (documented in docs/choices.md) rather than left waiting forever.
UNCONFIGURED_PROVIDER = "PROVIDER_NOT_CONFIGURED"


def verify_accounts_batch(
    sessions: SessionFactory,
    payments: Mapping[str, PaymentClient],
    wave_id: int,
    id_range: tuple[int, int],
) -> dict:
    report = BatchReport(Stage.ACCOUNTS.value)
    with sessions() as session:
        rows = rows_in_range(
            session,
            wave_id,
            [State.SELECTED],
            id_range,
            [R.c.id, R.c.nik, R.c.phone, R.c.payout_provider, R.c.payout_account],
        )
        # Paid once in the program: another wave's participant is not confirmed here (nor
        # is their account looked up); their seat goes to the next in line.
        elsewhere = participants_elsewhere(session, wave_id, [r.nik for r in rows])
    if not rows:
        return report.as_dict()
    now = utcnow()
    changes = []
    by_provider: dict[str, list] = {}
    for r in rows:
        if r.nik in elsewhere:
            changes.append(
                {
                    "_id": r.id,
                    "state": State.REJECTED.value,
                    "reason": ReasonCode.PRIOR_RECIPIENT.value,
                    "decided_at": now,
                    **CLEAR_PENDING,
                }
            )
            report.counts[ReasonCode.PRIOR_RECIPIENT.value] += 1
            continue
        by_provider.setdefault(r.payout_provider, []).append(r)
    for provider, group in by_provider.items():
        client = payments.get(provider)
        if client is None:
            for r in group:
                changes.append(
                    {
                        "_id": r.id,
                        "state": State.REJECTED.value,
                        "reason": ReasonCode.ACCOUNT_NOT_FOUND.value,
                        "account_status": UNCONFIGURED_PROVIDER,
                        "account_at": now,
                        "decided_at": now,
                        **CLEAR_PENDING,
                    }
                )
                report.counts[ReasonCode.ACCOUNT_NOT_FOUND.value] += 1
            continue
        answers = client.verify(
            [
                {"ref": str(r.id), "account": r.payout_account, "nik": r.nik, "phone": r.phone}
                for r in group
            ]
        )
        for r in group:
            status = answers[str(r.id)]
            if isinstance(status, PartnerFailure):
                report.fail(status)
                report.counts[PendingReason.PENDING_ACCOUNT.value] += 1
                changes.append(
                    pending_change(
                        r.id,
                        PendingReason.PENDING_ACCOUNT,
                        status.partner_id,
                        f"{status.error_class}: {status.detail}",
                        now,
                    )
                )
                continue
            reason = account_reason(status)
            change = {"_id": r.id, "account_status": status, "account_at": now, **CLEAR_PENDING}
            if reason is None:
                change.update(
                    state=State.CONFIRMED.value, card_number=card_number_for(r.id), confirmed_at=now
                )
                report.counts["confirmed"] += 1
            else:
                change.update(state=State.REJECTED.value, reason=str(reason), decided_at=now)
                report.counts[str(reason)] += 1
            changes.append(change)
    with sessions() as session, session.begin():
        bulk_update(session, changes, expect_state=[State.SELECTED.value])
    return report.as_dict()
