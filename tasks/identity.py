"""Identity: the population registry verifies each locally eligible registrant's NIK."""

from __future__ import annotations

from typing import Any

import orjson

from models.db import SessionFactory
from models.enums import PendingReason, Stage, State
from partners.client import PartnerFailure
from partners.registry import RegistryClient
from readmodels.report_types import BatchReport
from rules.eligibility import identity_reason
from tasks.common import (
    CLEAR_PENDING,
    R,
    bulk_update,
    load_wave,
    pending_change,
    rows_in_range,
    utcnow,
)


def verify_identity_batch(
    sessions: SessionFactory, registry: RegistryClient, wave_id: int, id_range: tuple[int, int]
) -> dict:
    report = BatchReport(Stage.IDENTITY.value)
    with sessions() as session:
        wave = load_wave(session, wave_id)
        rows = rows_in_range(
            session,
            wave_id,
            [State.AWAIT_IDENTITY],
            id_range,
            [R.c.id, R.c.nik, R.c.full_name, R.c.birth_date, R.c.kk_number, R.c.pending_stage],
        )
    if not rows:
        return report.as_dict()
    records = [
        {
            "ref": str(r.id),
            "nik": r.nik,
            "full_name": r.full_name,
            "birth_date": r.birth_date.isoformat(),
            "kk_number": r.kk_number,
        }
        for r in rows
    ]
    answers = registry.verify(records)
    now = utcnow()
    changes = []
    for r in rows:
        answer = answers[str(r.id)]
        if isinstance(answer, PartnerFailure):
            report.fail(answer)
            report.counts[PendingReason.PENDING_IDENTITY.value] += 1
            changes.append(
                pending_change(
                    r.id,
                    PendingReason.PENDING_IDENTITY,
                    answer.partner_id,
                    f"{answer.error_class}: {answer.detail}",
                    now,
                )
            )
            continue
        reason = identity_reason(
            found=answer.found,
            deceased=answer.deceased,
            name_score=answer.name_score,
            birth_date_match=answer.birth_date_match,
            kk_match=answer.kk_match,
            name_score_min=wave.name_score_min,
        )
        evidence = orjson.dumps(
            {
                "found": answer.found,
                "deceased": answer.deceased,
                "name_score": answer.name_score,
                "birth_date_match": answer.birth_date_match,
                "kk_match": answer.kk_match,
            }
        ).decode()
        change = {"_id": r.id, "identity_answer": evidence, "identity_at": now}
        if r.pending_stage is not None:  # only rows that waited carry an error to clear
            change.update(CLEAR_PENDING)
        if reason is None:
            change["state"] = State.AWAIT_SCREENING.value
            report.counts["verified"] += 1
        else:
            change.update(state=State.REJECTED.value, reason=str(reason), decided_at=now)
            report.counts[str(reason)] += 1
        changes.append(change)
    with sessions() as session, session.begin():
        bulk_update(session, changes, expect_state=[State.AWAIT_IDENTITY.value])
    return report.as_dict()


def identity_job(app: Any, wave_id: int, id_range: tuple[int, int]) -> dict:
    """The batch as a job of runtime/workers.py (in a worker process, or here): the batch
    function with what it needs from the process's app (runtime/app.py)."""
    return verify_identity_batch(app.sessions, app.partners.registry, wave_id, id_range)
