"""Agency screening: each configured agency in order; exclusions reject, priority lists mark."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from models.db import SessionFactory
from models.enums import PendingReason, Stage, State
from partners.agency import AgencyClient
from partners.client import PartnerFailure
from readmodels.report_types import BatchReport
from rules.draw import draw_key
from rules.eligibility import screening_decision
from tasks.common import (
    CLEAR_PENDING,
    R,
    bulk_update,
    load_wave,
    pending_change,
    rows_in_range,
    utcnow,
)

# Chunks of one batch asking the agencies at the same time (a worker process's threads).
MAX_CHAINS = 16


def ask_in_order(
    agencies: Sequence[AgencyClient],
    ids: list[int],
    niks: dict[int, str],
    answers: dict[int, dict],
) -> dict[int, PartnerFailure]:
    """Walks the agencies in order with the people of `ids` they can still decide, adding
    each answer to `answers`; returns those whose agency failed.

    Someone listed by an exclusion agency, or whose agency failed, is not sent further.
    The decision itself is rules.eligibility.screening_decision's, taken once per person
    afterwards. Chains run side by side on disjoint `ids`: each writes only its own
    people's entries of `answers`.
    """
    failed: dict[int, PartnerFailure] = {}
    open_ids = ids
    # One record per person for every agency: nine agencies ask about three million
    # people (the records are only read).
    records = {rid: {"ref": str(rid), "nik": niks[rid]} for rid in ids}
    for client in agencies:
        agency_id = client.settings.id
        asking = [rid for rid in open_ids if agency_id not in answers[rid]]
        if asking:
            result = client.check([records[rid] for rid in asking])
            for rid in asking:
                listed = result[records[rid]["ref"]]
                if isinstance(listed, PartnerFailure):
                    failed[rid] = listed
                else:
                    answers[rid][agency_id] = listed
        excludes = client.settings.effect == "exclude"
        open_ids = [
            rid
            for rid in open_ids
            if rid not in failed and not (excludes and answers[rid].get(agency_id))
        ]
    return failed


def screen_batch(
    sessions: SessionFactory,
    agencies: Sequence[AgencyClient],
    wave_id: int,
    id_range: tuple[int, int],
) -> dict:
    """Asks each agency, in order, only about those it can still decide.

    Answers already on file are reused (a rerun calls no agency twice for one person),
    and a registrant excluded by an earlier agency is not sent to later ones.
    """
    report = BatchReport(Stage.SCREENING.value)
    order = [(a.settings.id, a.settings.category, a.settings.effect) for a in agencies]
    with sessions() as session:
        wave = load_wave(session, wave_id)
        rows = rows_in_range(
            session,
            wave_id,
            [State.AWAIT_SCREENING],
            id_range,
            [R.c.id, R.c.nik, R.c.screening_answers, R.c.pending_stage],
        )
    if not rows:
        return report.as_dict()
    answers = {r.id: orjson.loads(r.screening_answers or "{}") for r in rows}
    niks = {r.id: r.nik for r in rows}
    waited = {r.id for r in rows if r.pending_stage is not None}
    # Each partner-sized chunk of the batch walks the agencies on its own, all chunks at
    # once (ask_in_order): the batch takes about as long as one chain of agency calls,
    # not one per agency per round, and the agencies' own limits (max_rps,
    # max_concurrency) are what hold the pace.
    failed: dict[int, PartnerFailure] = {}
    chunk = max(1, min(a.settings.batch_size for a in agencies)) if agencies else 1
    ids = list(answers)
    chunks = [ids[i : i + chunk] for i in range(0, len(ids), chunk)]
    if len(chunks) > 1:
        with ThreadPoolExecutor(
            max_workers=min(len(chunks), MAX_CHAINS), thread_name_prefix="screening"
        ) as pool:
            chains = list(
                pool.map(lambda part: ask_in_order(agencies, part, niks, answers), chunks)
            )
    else:
        chains = [ask_in_order(agencies, part, niks, answers) for part in chunks]
    for part_failed in chains:
        failed.update(part_failed)
    for why in failed.values():
        report.fail(why)
    now = utcnow()
    changes = []
    for rid, known in answers.items():
        decision = screening_decision(order, known)
        change = {
            "_id": rid,
            "screening_answers": orjson.dumps(known, option=orjson.OPT_SORT_KEYS).decode(),
            "screening_at": now,
        }
        if not decision.done:
            failure = failed.get(rid)
            if failure is not None:
                change.update(
                    pending_change(
                        rid,
                        PendingReason.PENDING_SCREENING,
                        failure.partner_id,
                        f"{failure.error_class}: {failure.detail}",
                        now,
                    )
                )
            report.counts[PendingReason.PENDING_SCREENING.value] += 1
        elif decision.reason is not None:
            change.update(
                state=State.REJECTED.value,
                reason=str(decision.reason),
                decided_at=now,
                **(CLEAR_PENDING if rid in waited else {}),
            )
            report.counts[str(decision.reason)] += 1
        else:
            change.update(
                state=State.ELIGIBLE.value,
                priority=decision.priority,
                draw_key=draw_key(wave.lottery_seed, niks[rid]),
                **(CLEAR_PENDING if rid in waited else {}),
            )
            report.counts["eligible"] += 1
        changes.append(change)
    with sessions() as session, session.begin():
        bulk_update(session, changes, expect_state=[State.AWAIT_SCREENING.value])
    return report.as_dict()


def screening_job(app: Any, wave_id: int, id_range: tuple[int, int]) -> dict:
    """The batch as a job of runtime/workers.py (in a worker process, or here): the batch
    function with what it needs from the process's app (runtime/app.py)."""
    return screen_batch(app.sessions, app.partners.agencies, wave_id, id_range)
