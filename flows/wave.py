"""The `wave` flow: one subflow per stage, each paging through what still needs it.

Reads like the runbook: intake, local eligibility, identity, screening, draw, accounts
(with backfill rounds), rollout, announcement, then close. Every stage only picks up
work still to do, so a rerun resumes exactly the pending part.
"""

from __future__ import annotations

import time

from prefect.cache_policies import NO_CACHE

from flows.publish import (
    publish_draw,
    publish_reconcile,
    publish_stage,
    publish_wave,
    track_progress,
)
from flows.runners import batch_task_runner
from models.enums import ReasonCode, Stage, State
from tasks import batches as t
from tasks import draw, intake, workers
from tasks.boundary import flow, task
from tasks.operations import draw_facts_task
from tasks.report_types import merge_reports
from tasks.runtime import get_runtime

# Batch tasks at once in a partner stage: enough to keep every worker process busy.
PARTNER_THREADS = max(3, workers.worker_count())
# Batch tasks at once in a stage whose batches run in worker processes: twice as many as
# workers, so that each worker has a batch queued behind the one it runs while Prefect
# starts and finishes task runs (a round trip to the API each, slow on a busy machine).
WORKER_STAGE_THREADS = max(PARTNER_THREADS, 2 * workers.worker_count())
LOCAL_BATCH = 50_000  # set-based SQL: big pages are cheap


def _batch() -> int:
    """Registrants per batch task (PRAKERJA_BATCH_SIZE, small in crash tests). A task
    sends its people to a partner in the partner's own batch_size, several calls side by
    side (partners.client), and writes its results in one transaction: big tasks keep
    Prefect's per-task cost small beside the work."""
    return get_runtime().settings.batch_size


def _run_batches(task, wave_id: int, ranges: list[tuple[int, int]], **options) -> list[dict]:
    futures = [task.submit(wave_id, r, **options) for r in ranges]
    track_progress(wave_id, futures)  # wave-<N>-<stage>-progress moves as batches finish
    return [f.result() for f in futures]


@flow(name="intake", flow_run_name="wave-{wave_id}-intake")
def intake_stage(wave_id: int, path: str | None = None) -> dict:
    summary = publish_stage(wave_id, Stage.INTAKE, [t.import_export_task(wave_id, path)])
    # Registrants can sign in to the dashboard (and see "being verified") from here on.
    summary["portal_index"] = t.portal_index_task(wave_id)
    return summary


@flow(
    name="local-eligibility",
    flow_run_name="wave-{wave_id}-local-eligibility",
    task_runner=batch_task_runner(2),
)
def local_eligibility_stage(wave_id: int) -> dict:
    ranges = t.plan_batches_task(wave_id, [State.AWAIT_LOCAL.value], LOCAL_BATCH)
    return publish_stage(
        wave_id, Stage.LOCAL_ELIGIBILITY, _run_batches(t.local_eligibility_task, wave_id, ranges)
    )


@flow(
    name="identity",
    flow_run_name="wave-{wave_id}-identity",
    task_runner=batch_task_runner(WORKER_STAGE_THREADS),
)
def identity_stage(wave_id: int) -> dict:
    ranges = t.plan_batches_task(wave_id, [State.AWAIT_IDENTITY.value], _batch())
    return publish_stage(
        wave_id,
        Stage.IDENTITY,
        _run_batches(t.verify_identity_task, wave_id, ranges, in_worker=len(ranges) > 1),
    )


@flow(
    name="screening",
    flow_run_name="wave-{wave_id}-screening",
    task_runner=batch_task_runner(WORKER_STAGE_THREADS),
)
def screening_stage(wave_id: int) -> dict:
    ranges = t.plan_batches_task(wave_id, [State.AWAIT_SCREENING.value], _batch())
    return publish_stage(
        wave_id,
        Stage.SCREENING,
        _run_batches(t.screen_task, wave_id, ranges, in_worker=len(ranges) > 1),
    )


@flow(name="draw", flow_run_name="wave-{wave_id}-draw")
def draw_stage(wave_id: int, without_pending: bool = False) -> dict:
    summary = publish_stage(wave_id, Stage.DRAW, [t.draw_task(wave_id, without_pending)])
    publish_draw(wave_id, draw_facts_task(wave_id))  # seed, pool size and digest, seats
    return summary


@flow(
    name="accounts",
    flow_run_name="wave-{wave_id}-accounts",
    task_runner=batch_task_runner(PARTNER_THREADS),
)
def accounts_stage(wave_id: int) -> dict:
    """Checks payout accounts, then backfills freed seats, round after round."""
    reports: list[dict] = []
    while True:
        ranges = t.plan_batches_task(wave_id, [State.SELECTED.value], _batch())
        reports += _run_batches(t.verify_accounts_task, wave_id, ranges)
        if t.accounts_unanswered_task(wave_id):
            break  # a pending account holds its seat and the round
        filled = t.fill_free_seats_task(wave_id)
        reports.append(
            {
                "stage": Stage.ACCOUNTS.value,
                "counts": {
                    "backfilled": filled.get("selected", 0),
                    "backfill_household_cap": filled.get("household_cap", 0),
                },
                "failures": [],
            }
        )
        if not filled.get("selected"):
            break
    return publish_stage(wave_id, Stage.ACCOUNTS, reports)


@flow(
    name="rollout",
    flow_run_name="wave-{wave_id}-rollout",
    task_runner=batch_task_runner(PARTNER_THREADS),
)
def rollout_stage(wave_id: int) -> dict:
    ranges = t.plan_batches_task(wave_id, [State.CONFIRMED.value], _batch())
    summary = publish_stage(wave_id, Stage.ROLLOUT, _run_batches(t.credit_task, wave_id, ranges))
    if ranges:  # a finished wave's rerun asks the issuer nothing, not even its statement
        summary["reconcile"] = publish_reconcile(wave_id, t.reconcile_task(wave_id))
    return summary


def rollout_refilling(wave_id: int, refill: bool) -> dict:
    """The rollout; a credit refused there as PRIOR_RECIPIENT (another wave holds that NIK's
    credit) frees a seat, which (with `refill`) the next in line gets in this same run:
    accounts and backfill again, then their credits."""
    summary = rollout_stage(wave_id)
    freed = summary["counts"].get(ReasonCode.PRIOR_RECIPIENT.value, 0)
    while refill and freed:
        accounts_stage(wave_id)
        again = rollout_stage(wave_id)
        freed = again["counts"].get(ReasonCode.PRIOR_RECIPIENT.value, 0)
        summary = {**again, **merge_reports(Stage.ROLLOUT.value, [summary, again])}
    return summary


@task(name="seats-to-refill", cache_policy=NO_CACHE)
def seats_to_refill_task(wave_id: int) -> bool:
    with get_runtime().sessions() as session:
        return draw.seats_to_refill(session, wave_id)


@flow(
    name="announce",
    flow_run_name="wave-{wave_id}-announce",
    task_runner=batch_task_runner(PARTNER_THREADS),
)
def announce_stage(wave_id: int) -> dict:
    ranges = t.plan_message_batches_task(wave_id, _batch())
    return publish_stage(
        wave_id, Stage.ANNOUNCE, _run_batches(t.send_messages_task, wave_id, ranges)
    )


@flow(name="wave", flow_run_name="wave-{wave_id}")
def wave(
    wave_id: int,
    registrants_path: str | None = None,
    stages: list[Stage] | None = None,
    draw_without_pending: bool = False,
    keep_open: bool = False,
) -> dict:
    """Runs every stage of a wave still to do, then closes it if nothing is pending."""
    todo = set(stages or list(Stage))
    runbook = [
        (Stage.INTAKE, lambda: intake_stage(wave_id, registrants_path)),
        (Stage.LOCAL_ELIGIBILITY, lambda: local_eligibility_stage(wave_id)),
        (Stage.IDENTITY, lambda: identity_stage(wave_id)),
        (Stage.SCREENING, lambda: screening_stage(wave_id)),
        (Stage.DRAW, lambda: draw_stage(wave_id, draw_without_pending)),
        (Stage.ACCOUNTS, lambda: accounts_stage(wave_id)),
        (Stage.ROLLOUT, lambda: rollout_refilling(wave_id, Stage.ACCOUNTS in todo)),
        (Stage.ANNOUNCE, lambda: announce_stage(wave_id)),
    ]
    summary: dict = {"wave_id": wave_id, "stages": {}}
    if todo & {Stage.IDENTITY, Stage.SCREENING} and intake.is_big_export(registrants_path):
        workers.warm_up()  # they start while intake runs; a small wave starts them lazily
    for stage, run_stage in runbook:
        if stage in todo:
            started = time.monotonic()
            summary["stages"][stage.value] = run_stage()
            summary["stages"][stage.value]["seconds"] = round(time.monotonic() - started, 3)
    # A seat still owed (freed at the rollout of a run without the accounts stage, such as
    # the overnight rollout) keeps the wave open for the run that fills it.
    summary["close"] = t.close_wave_task(wave_id, keep_open or seats_to_refill_task(wave_id))
    summary["report"] = publish_wave(wave_id, t.report_task(wave_id))
    return summary
