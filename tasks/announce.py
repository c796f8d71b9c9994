"""Announcement: one `balance_credited` SMS per credited participant, via the gateway."""

from __future__ import annotations

import json

from sqlalchemy import select

from models.db import SessionFactory
from models.enums import MessageStatus, Stage
from models.tables import Message
from partners.client import PartnerFailure
from partners.notifier import NotifierClient
from readmodels.report_types import BatchReport
from tasks.common import bulk_update, utcnow

M = Message.__table__  # type: ignore[attr-defined]


def plan_message_batches(
    sessions: SessionFactory, wave_id: int, batch_size: int
) -> list[tuple[int, int]]:
    with sessions() as session:
        ids = list(
            session.execute(
                select(M.c.id)
                .where(M.c.wave_id == wave_id, M.c.status == MessageStatus.QUEUED.value)
                .order_by(M.c.id)
            ).scalars()
        )
    return [
        (ids[i], ids[min(i + batch_size, len(ids)) - 1]) for i in range(0, len(ids), batch_size)
    ]


def send_messages_batch(
    sessions: SessionFactory, notifier: NotifierClient, wave_id: int, id_range: tuple[int, int]
) -> dict:
    report = BatchReport(Stage.ANNOUNCE.value)
    lo, hi = id_range
    with sessions() as session:
        queued = list(
            session.execute(
                select(M).where(
                    M.c.wave_id == wave_id,
                    M.c.status == MessageStatus.QUEUED.value,
                    M.c.id >= lo,
                    M.c.id <= hi,
                )
            )
        )
    if not queued:
        return report.as_dict()
    answers = notifier.send(
        [
            {
                "idempotency_key": m.idempotency_key,
                "channel": "sms",
                "to": m.phone,
                "template": m.template,
                "params": json.loads(m.params_json),
            }
            for m in queued
        ]
    )
    now = utcnow()
    changes = []
    for m in queued:
        answer = answers[m.idempotency_key]
        if isinstance(answer, PartnerFailure):
            report.fail(answer)
            report.counts["queued"] += 1
            changes.append(
                {"_id": m.id, "attempts": m.attempts + 1, "last_error": answer.error_class}
            )
        else:
            report.counts[answer.status.lower()] += 1
            changes.append(
                {
                    "_id": m.id,
                    "status": answer.status,
                    "reason": answer.reason,
                    "attempts": m.attempts + 1,
                    "sent_at": now,
                    "last_error": None,
                }
            )
    with sessions() as session, session.begin():
        bulk_update(
            session, changes, expect_state=[MessageStatus.QUEUED.value], table=M, state_col="status"
        )
    return report.as_dict()
