"""The `wave` flow: one subflow per stage, each paging through what still needs it.

Reads like the runbook: intake, local eligibility, identity, screening, draw, accounts
(with backfill rounds), rollout, announcement, then close. Every stage only picks up
work still to do, so a rerun resumes exactly the pending part.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect import tags
from prefect.runtime import flow_run as current_run

from flows.pacing import credit_paced
from flows.publish import (
    publish_awaiting_sign_off,
    publish_draw,
    publish_reconcile,
    publish_stage,
    publish_wave,
    track_progress,
)
from flows.runners import batch_task_runner, partner_threads, worker_stage_threads
from models.enums import ReasonCode, Stage, State
from readmodels.report_types import merge_reports
from readmodels.summaries import CloseResult, StageSummary, WaveSummary
from rules.pacing import Pacing
from rules.settings import JAKARTA
from runtime import progress, workers
from runtime.app import current
from runtime.boundary import flow
from runtime.execution import Execution
from tasks import batches as t
from tasks import intake
from tasks.operations import draw_facts_task

# Registrants per batch task. A task sends its people to a partner in the partner's own
# batch_size, several calls side by side (partners.client), and writes its results in
# one transaction: big tasks keep Prefect's per-task cost small beside the work.
LOCAL_BATCH = 50_000  # set-based SQL: big pages are cheap


def batch_size() -> int:
    """PRAKERJA_BATCH_SIZE (small in crash tests): the process's settings (models/config.py),
    read when it was configured."""
    return current().settings.batch_size


def on(stage, execution: Execution, threads: Callable[[Execution], int]):
    """The stage flow with the run's task runner (threads here, or its Dask cluster)."""
    return stage.with_options(task_runner=batch_task_runner(execution, threads(execution)))


def _run_batches(task, wave_id: int, ranges: list[tuple[int, int]], **options) -> list[dict]:
    futures = [task.submit(wave_id, r, **options) for r in ranges]
    track_progress(wave_id, futures)  # wave-<N>-<stage>-progress moves as batches finish
    return [f.result() for f in futures]


@flow(name="intake", flow_run_name="wave-{wave_id}-intake")
def intake_stage(wave_id: int, path: str | None = None, parse_elsewhere: bool = True) -> dict:
    # (Intake itself refreshes PostgreSQL's statistics before it ranks duplicates.)
    loaded = t.import_export_task(wave_id, path, parse_elsewhere)
    summary = publish_stage(wave_id, Stage.INTAKE, [loaded])
    # Registrants can sign in to the dashboard (and see "being verified") from here on.
    summary["portal_index"] = t.portal_index_task(wave_id)
    return summary


@flow(name="local-eligibility", flow_run_name="wave-{wave_id}-local-eligibility")
def local_eligibility_stage(wave_id: int) -> dict:
    ranges = t.plan_batches_task(wave_id, [State.AWAIT_LOCAL.value], LOCAL_BATCH)
    return publish_stage(
        wave_id, Stage.LOCAL_ELIGIBILITY, _run_batches(t.local_eligibility_task, wave_id, ranges)
    )


@flow(name="identity", flow_run_name="wave-{wave_id}-identity")
def identity_stage(wave_id: int, execution: Execution) -> dict:
    ranges = t.plan_batches_task(wave_id, [State.AWAIT_IDENTITY.value], batch_size())
    return publish_stage(
        wave_id,
        Stage.IDENTITY,
        _run_batches(
            t.verify_identity_task,
            wave_id,
            ranges,
            execution=execution,
            in_worker=len(ranges) > 1,
        ),
    )


@flow(name="screening", flow_run_name="wave-{wave_id}-screening")
def screening_stage(wave_id: int, execution: Execution) -> dict:
    ranges = t.plan_batches_task(wave_id, [State.AWAIT_SCREENING.value], batch_size())
    reports = _run_batches(
        t.screen_task, wave_id, ranges, execution=execution, in_worker=len(ranges) > 1
    )
    t.refresh_statistics_task(wave_id)  # every row decided since intake: before the draw
    return publish_stage(wave_id, Stage.SCREENING, reports)


@flow(name="draw", flow_run_name="wave-{wave_id}-draw")
def draw_stage(wave_id: int, without_pending: bool = False) -> dict:
    drawn = t.draw_task(wave_id, without_pending)
    t.refresh_statistics_task(wave_id)  # drawn and waitlisted: before the backfill rounds
    summary = publish_stage(wave_id, Stage.DRAW, [drawn])
    publish_draw(wave_id, draw_facts_task(wave_id))  # seed, pool size and digest, seats
    return summary


@flow(name="accounts", flow_run_name="wave-{wave_id}-accounts")
def accounts_stage(wave_id: int, execution: Execution) -> dict:
    """Checks payout accounts, then backfills freed seats, round after round."""
    reports: list[dict] = []
    while True:
        ranges = t.plan_batches_task(wave_id, [State.SELECTED.value], batch_size())
        reports += _run_batches(t.verify_accounts_task, wave_id, ranges, execution=execution)
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


@flow(name="rollout", flow_run_name="wave-{wave_id}-rollout")
def rollout_stage(wave_id: int, execution: Execution, pacing: Pacing | None = None) -> dict:
    """Credits the confirmed: at once, or (the overnight rollout) paced to the deadline;
    nothing before enough approvals of the list as it stands (sign-off before money)."""
    sign_off = t.sign_off_status_task(wave_id)
    if not sign_off.approved:
        publish_awaiting_sign_off(wave_id, sign_off)
        return {"stage": Stage.ROLLOUT.value, "counts": {}, "failures": [], "sign_off": sign_off}
    size = pacing.batch_size if pacing else batch_size()
    ranges = t.plan_batches_task(wave_id, [State.CONFIRMED.value], size)
    paced = None
    if pacing is None:
        reports = _run_batches(t.credit_task, wave_id, ranges, execution=execution)
    else:
        reports, paced = credit_paced(wave_id, ranges, execution, pacing)
    summary = publish_stage(wave_id, Stage.ROLLOUT, reports)
    if paced is not None:
        summary["pacing"] = paced
    if ranges:  # a finished wave's rerun asks the issuer nothing, not even its statement
        summary["reconcile"] = publish_reconcile(wave_id, t.reconcile_task(wave_id, execution))
    return summary


def rollout_refilling(
    wave_id: int, refill: bool, execution: Execution, pacing: Pacing | None = None
) -> dict:
    """The rollout; a credit refused there as PRIOR_RECIPIENT (another wave holds that NIK's
    credit) frees a seat, which (with `refill`) the next in line gets in this same run:
    accounts and backfill again, then their credits."""
    rollout = on(rollout_stage, execution, partner_threads)
    summary = rollout(wave_id, execution, pacing)
    freed = summary["counts"].get(ReasonCode.PRIOR_RECIPIENT.value, 0)
    while refill and freed:
        on(accounts_stage, execution, partner_threads)(wave_id, execution)
        again = rollout(wave_id, execution)
        freed = again["counts"].get(ReasonCode.PRIOR_RECIPIENT.value, 0)
        summary = {**again, **merge_reports(Stage.ROLLOUT.value, [summary, again])}
    return summary


@flow(name="announce", flow_run_name="wave-{wave_id}-announce")
def announce_stage(wave_id: int, execution: Execution) -> dict:
    ranges = t.plan_message_batches_task(wave_id, batch_size())
    return publish_stage(
        wave_id,
        Stage.ANNOUNCE,
        _run_batches(t.send_messages_task, wave_id, ranges, execution=execution),
    )


def wave_run_name() -> str:
    """`wave-<N>-<YYYYMMDD-HHMMSS>` in Jakarta time: the `wave-<N>` prefix (and tag) finds a
    wave's runs, the time tells them apart (every demo's run is wave 1)."""
    return f"wave-{current_run.parameters['wave_id']}-{datetime.now(JAKARTA):%Y%m%d-%H%M%S}"


@flow(name="wave", flow_run_name=wave_run_name)
def wave(
    wave_id: int,
    registrants_path: str | None = None,
    stages: list[Stage] | None = None,
    draw_without_pending: bool = False,
    keep_open: bool = False,
    execution: Execution | None = None,
    pacing: Pacing | None = None,
) -> WaveSummary:
    """Runs every stage of a wave still to do, then closes it if nothing is pending.

    `execution` (runtime/execution.py) says where its batches run; without it, from this
    process's settings (models/config.py), read once when it was configured. `pacing`
    spreads the rollout's credits to the wave's deadline (the overnight rollout); without
    it they go as fast as allowed."""
    run = execution or current().execution
    todo = set(stages or list(Stage))
    runbook = [
        (Stage.INTAKE, lambda: intake_stage(wave_id, registrants_path, run.workers() > 0)),
        (Stage.LOCAL_ELIGIBILITY, lambda: on(local_eligibility_stage, run, lambda _: 2)(wave_id)),
        (Stage.IDENTITY, lambda: on(identity_stage, run, worker_stage_threads)(wave_id, run)),
        (Stage.SCREENING, lambda: on(screening_stage, run, worker_stage_threads)(wave_id, run)),
        (Stage.DRAW, lambda: draw_stage(wave_id, draw_without_pending)),
        (Stage.ACCOUNTS, lambda: on(accounts_stage, run, partner_threads)(wave_id, run)),
        (Stage.ROLLOUT, lambda: rollout_refilling(wave_id, Stage.ACCOUNTS in todo, run, pacing)),
        (Stage.ANNOUNCE, lambda: on(announce_stage, run, partner_threads)(wave_id, run)),
    ]
    # The run's name (wave_run_name), for the CLI's "Prefect flow run ..." line.
    summary = WaveSummary(wave_id=wave_id, flow_run_name=current_run.name)
    if todo & {Stage.IDENTITY, Stage.SCREENING} and intake.is_big_export(registrants_path):
        workers.warm_up(run.workers())  # they start during intake; a small wave lazily
    for stage, run_stage in runbook:
        if stage in todo:
            started = time.monotonic()
            progress.stage_started(wave_id, stage.value)  # the CLI's live line per stage
            done = run_stage()
            done["seconds"] = round(time.monotonic() - started, 3)
            progress.stage_finished(wave_id, stage.value, done, done["seconds"])
            summary.stages[stage.value] = StageSummary.model_validate(done)
    rollout = summary.stages.get(Stage.ROLLOUT.value)
    if rollout is not None and rollout.sign_off is not None:
        summary.sign_off = rollout.sign_off
    started = time.monotonic()
    progress.stage_started(wave_id, "close")
    # A seat still owed (freed at the rollout of a run without the accounts stage, such as
    # the overnight rollout) keeps the wave open for the run that fills it.
    closed = t.close_wave_task(wave_id, keep_open or t.seats_to_refill_task(wave_id))
    summary.close = CloseResult.model_validate(closed)
    summary.report = publish_wave(wave_id, t.report_task(wave_id))
    progress.stage_finished(wave_id, "close", {}, time.monotonic() - started)
    return summary


def run_wave_flow(wave_id: int, **options: Any) -> WaveSummary:
    """The `wave` flow tagged `prakerja` and `wave-<N>`: a flow run of its own when the CLI
    calls it, a subflow inside a deployment's run; its summary, with its flow run's id.
    A failed run raises its (cleaned) failure. The run service (services/runs.py) calls
    it for both."""
    with tags("prakerja", f"wave-{wave_id}"):
        state = wave(wave_id=wave_id, return_state=True, **options)
    summary = state.result()
    summary.flow_run_id = str(state.state_details.flow_run_id)
    return summary
