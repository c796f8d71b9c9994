"""The Prefect tasks: thin wrappers that hand each plain batch function its dependencies.

Each returns counts and partner failures, never people; partner failures are also
published as `prakerja.partner.failed` events for the alert automations.
"""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from models import names
from readmodels import reporting
from readmodels.signoff import sign_off_status
from readmodels.summaries import SignOffStatus
from runtime import workers
from runtime.app import App, current
from runtime.boundary import task
from runtime.execution import Execution
from tasks import (
    accounts,
    announce,
    draw,
    eligibility,
    identity,
    intake,
    rollout,
    screening,
    waves,
)
from tasks.common import plan_batches

# Every task here answers from the database (who is in which state now), not from its
# arguments alone, and some are called again with the same arguments in one flow run (the
# accounts stage's backfill rounds). With result persistence on
# (PREFECT_RESULTS_PERSIST_BY_DEFAULT), Prefect's default cache policy would answer such a
# call with the first call's result: never cache them.
# (Written out on each task: a splatted dict would hide the arguments from type checks.)
DB_RETRY_DELAYS_S: list[float] = [2, 10]


def runtime_for(execution: Execution | None) -> App:
    """This process's app, with the run's shared partner limits: a batch task carries
    its run's Execution, so that a Dask worker started elsewhere does what the run asked."""
    return current(execution.partner_limits if execution is not None else None)


def publish_failures(wave_id: int, report: dict) -> dict:
    for f in report.get("failures", []):
        emit_event(
            event=names.PARTNER_FAILED,
            resource={
                "prefect.resource.id": names.partner_resource(f["partner"]),
                "prefect.resource.name": f["partner"],
            },
            related=[
                {
                    "prefect.resource.id": names.wave_resource(wave_id),
                    "prefect.resource.role": "wave",
                }
            ],
            payload={
                "wave_id": wave_id,
                "stage": report["stage"],
                "partner": f["partner"],
                "items": f["items"],
                "error_class": f["error_class"],
                "needs_person": f["needs_person"],
            },
        )
    return report


@task(name="plan-batches", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE)
def plan_batches_task(wave_id: int, states: list[str], batch_size: int) -> list[tuple[int, int]]:
    rt = current()
    with rt.sessions() as session:
        return plan_batches(session, wave_id, states, batch_size)


@task(name="import-export", cache_policy=NO_CACHE)
def import_export_task(wave_id: int, path: str | None, parse_elsewhere: bool = True) -> dict:
    from runtime import progress

    result = intake.import_export(
        current().sessions,
        wave_id,
        path,
        parse_elsewhere=parse_elsewhere,
        progress=lambda rows: progress.records_so_far(wave_id, "intake", rows),
    )
    with current().sessions() as session:
        # The stage's line says what intake refused: `26,042 rejected (email unverified)`.
        rejected = reporting.rejected_at_intake(session, wave_id)
    return {
        "rows": result.rows,
        "inserted": result.inserted,
        "skipped": result.skipped_already_loaded,
        **rejected,  # by reason code, as the other stages count theirs
    }


@task(
    name="refresh-statistics",
    retries=2,
    retry_delay_seconds=DB_RETRY_DELAYS_S,
    cache_policy=NO_CACHE,
)
def refresh_statistics_task(wave_id: int) -> bool:
    """Fresh planner statistics after a bulk stage (PostgreSQL; tasks/waves.py)."""
    return waves.refresh_statistics(current().sessions)


@task(name="portal-index", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE)
def portal_index_task(wave_id: int) -> dict:
    """The dashboard's NIK index of the wave, once intake is done (tasks/portal_index.py)."""
    from tasks.portal_index import build_portal_index

    return build_portal_index(current().sessions, wave_id)


@task(
    name="local-eligibility-batch",
    retries=2,
    retry_delay_seconds=DB_RETRY_DELAYS_S,
    cache_policy=NO_CACHE,
)
def local_eligibility_task(wave_id: int, id_range: tuple[int, int]) -> dict:
    return eligibility.check_local_eligibility_batch(current().sessions, wave_id, id_range)


@task(name="verify-identity-batch", cache_policy=NO_CACHE)
def verify_identity_task(
    wave_id: int,
    id_range: tuple[int, int],
    execution: Execution | None = None,
    in_worker: bool = False,
) -> dict:
    # With more than one batch, in a worker process, side by side with the others.
    report = _in_worker(identity.identity_job, wave_id, id_range, execution, in_worker)
    return publish_failures(wave_id, report)


def _in_worker(job, wave_id, id_range, execution: Execution | None, in_worker: bool) -> dict:
    app = runtime_for(execution)
    count = (execution or app.execution).workers() if in_worker else 0
    return workers.run(job, wave_id, id_range, workers=count, app=app)


@task(name="screen-batch", cache_policy=NO_CACHE)
def screen_task(
    wave_id: int,
    id_range: tuple[int, int],
    execution: Execution | None = None,
    in_worker: bool = False,
) -> dict:
    report = _in_worker(screening.screening_job, wave_id, id_range, execution, in_worker)
    return publish_failures(wave_id, report)


@task(
    name="draw-participants",
    retries=2,
    retry_delay_seconds=DB_RETRY_DELAYS_S,
    cache_policy=NO_CACHE,
)
def draw_task(wave_id: int, without_pending: bool) -> dict:
    return draw.draw_participants(current().sessions, wave_id, without_pending=without_pending)


@task(
    name="fill-free-seats", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE
)
def fill_free_seats_task(wave_id: int) -> dict:
    return draw.fill_free_seats(current().sessions, wave_id)


@task(name="verify-accounts-batch", cache_policy=NO_CACHE)
def verify_accounts_task(
    wave_id: int, id_range: tuple[int, int], execution: Execution | None = None
) -> dict:
    rt = runtime_for(execution)
    report = accounts.verify_accounts_batch(rt.sessions, rt.partners.payments, wave_id, id_range)
    return publish_failures(wave_id, report)


@task(name="credit-training-balance-batch", cache_policy=NO_CACHE)
def credit_task(
    wave_id: int, id_range: tuple[int, int], execution: Execution | None = None
) -> dict:
    rt = runtime_for(execution)
    report = rollout.credit_training_balance_batch(
        rt.sessions, rt.partners.issuer, wave_id, id_range, approvers=rt.approvers
    )
    return publish_failures(wave_id, report)


@task(
    name="plan-message-batches",
    retries=2,
    retry_delay_seconds=DB_RETRY_DELAYS_S,
    cache_policy=NO_CACHE,
)
def plan_message_batches_task(wave_id: int, batch_size: int) -> list[tuple[int, int]]:
    return announce.plan_message_batches(current().sessions, wave_id, batch_size)


@task(name="send-messages-batch", cache_policy=NO_CACHE)
def send_messages_task(
    wave_id: int, id_range: tuple[int, int], execution: Execution | None = None
) -> dict:
    rt = runtime_for(execution)
    report = announce.send_messages_batch(rt.sessions, rt.partners.notifier, wave_id, id_range)
    return publish_failures(wave_id, report)


@task(name="reconcile", cache_policy=NO_CACHE)
def reconcile_task(wave_id: int, execution: Execution | None = None) -> dict:
    rt = runtime_for(execution)
    return reporting.reconcile(rt.sessions, rt.partners.issuer, wave_id)


@task(name="wave-report", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE)
def report_task(wave_id: int) -> dict:
    with current().sessions() as session:
        return reporting.wave_report(session, wave_id, approvers=current().approvers)


@task(name="stage-state", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE)
def stage_state_task(wave_id: int) -> dict:
    """What a stage artifact shows of the wave: counts from indexes, no ledger or sign-off."""
    with current().sessions() as session:
        return reporting.stage_state(session, wave_id)


@task(name="close-wave", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE)
def close_wave_task(wave_id: int, keep_open: bool) -> dict:
    return waves.close_wave_if_done(current().sessions, wave_id, keep_open=keep_open)


@task(
    name="accounts-unanswered",
    retries=2,
    retry_delay_seconds=DB_RETRY_DELAYS_S,
    cache_policy=NO_CACHE,
)
def accounts_unanswered_task(wave_id: int) -> int:
    with current().sessions() as session:
        return draw.accounts_unanswered(session, wave_id)


@task(
    name="sign-off-status", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE
)
def sign_off_status_task(wave_id: int) -> SignOffStatus:
    """Whether the wave may be credited (wave-rules.md, "Sign-off before money"): counts,
    seats and the digest of the confirmed list, never a person."""
    with current().sessions() as session:
        return SignOffStatus.model_validate(
            sign_off_status(session, wave_id, approvers=current().approvers)
        )


@task(
    name="seats-to-refill", retries=2, retry_delay_seconds=DB_RETRY_DELAYS_S, cache_policy=NO_CACHE
)
def seats_to_refill_task(wave_id: int) -> bool:
    """Whether a seat freed at the rollout (PRIOR_RECIPIENT) still waits for the next in
    line: the wave stays open for the run that fills it."""
    with current().sessions() as session:
        return draw.seats_to_refill(session, wave_id)
