"""The flows behind the deployments of operations.md.

| flow (= deployment)  | run name                          | does                              |
| -------------------- | --------------------------------- | --------------------------------- |
| `weekly-wave`        | `wave-<N>-weekly`                 | runs the due wave (drop folder)   |
| `overnight-rollout`  | `wave-<N>-overnight-rollout`      | credits the confirmed, paced      |
| `rerun-wave`         | `wave-<N>-rerun-<stamp>-<4 hex>`  | resumes a wave (all/chosen stages)|
| `raise-quota`        | `wave-<N>-raise-quota-<Q>`        | raises the quota, new seats       |

(`<stamp>`: `YYYYmmdd-HHMMSS`, Jakarta time.)

Every run is tagged `prakerja` and `wave-<N>`, holds the wave's lease (tasks/lease.py) while
it works on the wave, and runs the `wave` flow (named `wave-<N>`) for the stages.
Parameters are typed, so the UI's run form shows choices and bounds and the server refuses
a wrong value when the run is created. Descriptions come from the docstrings' Args.
(No `from __future__ import annotations` here: Prefect reads the annotations.)
"""

import logging
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect import get_run_logger, tags
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run as current_run
from pydantic import Field

from deployments import drop
from flows.logging import install_masking
from flows.publish import publish_draw, publish_reconcile, publish_stage
from flows.runners import batch_task_runner
from flows.wave import wave as wave_flow
from models.enums import Stage, State
from models.tables import Wave
from rules.pacing import pace
from rules.settings import JAKARTA, Quota, SettingsError, WaveId, WaveSettings, jakarta_today
from tasks import batches as t
from tasks.boundary import flow, task
from tasks.common import utcnow
from tasks.lease import HeldLease, hold_wave_lease
from tasks.operations import (
    confirmed_count,
    draw_facts_task,
    rollout_deadline,
    wave_ids,
    waves_to_credit,
)
from tasks.runtime import get_runtime
from tasks.waves import create_or_resume_wave

# Stages the weekly wave leaves to the overnight rollout when credit_overnight is on.
OVERNIGHT_STAGES = (Stage.ROLLOUT, Stage.ANNOUNCE)
# Injected in tests (the pacing never really sleeps there).
SLEEP = time.sleep

install_masking()


# ---------------------------------------------------------------- naming, labels, lease
def _stamp() -> str:
    return datetime.now(JAKARTA).strftime("%Y%m%d-%H%M%S")


def _rerun_run_name() -> str:
    # Jakarta time to the second plus 4 random hex digits: two reruns started in the same
    # second (a double click, two operators) still get different names in the UI and alerts.
    return f"wave-{current_run.parameters['wave_id']}-rerun-{_stamp()}-{secrets.token_hex(2)}"


def _raise_quota_run_name() -> str:
    p = current_run.parameters
    return f"wave-{p['wave_id']}-raise-quota-{p['quota']}"


def _weekly_run_name() -> str:
    return f"weekly-wave-{_stamp()}"  # renamed wave-<N>-weekly once the due wave is known


def _overnight_run_name() -> str:
    return f"overnight-rollout-{_stamp()}"  # renamed wave-<N>-overnight-rollout


def label_run(wave_ids_: list[int], name: str | None = None) -> None:
    """Tags the running flow run `prakerja` and `wave-<N>` (and renames it) once it knows
    its waves. Labels are a courtesy: an API hiccup is logged, never fatal."""
    from prefect.client.orchestration import get_client

    run_id = current_run.id
    if not run_id:
        return
    wanted = sorted(set(current_run.tags) | {"prakerja"} | {f"wave-{n}" for n in wave_ids_})
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=name, tags=wanted)
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not label this run (%s)", type(exc).__name__)


def _logger():
    """The run logger inside a run (sent to the server), else the program's logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("prakerja")


def _wave_row(wave_id: int) -> Wave:
    with get_runtime().sessions() as session:
        row = session.get(Wave, wave_id)
    if row is None:
        raise LookupError(f"wave {wave_id} does not exist")
    return row


@contextmanager
def wave_lease(wave_id: int, wait_s: float | None = None) -> Iterator[HeldLease]:
    """Holds the wave's lease, exactly as `prakerja wave run` does (tasks/lease.py).

    A wave held by another live run is waited for, up to `wait_s` (PRAKERJA_LEASE_WAIT_S,
    default 600 s), then this run fails: one wave never runs twice at once. A holder that
    died is replaced at once (same host) or after its 60 s lease (another host). A run
    whose lease another run took (after a pause or an outage longer than the lease) fails
    with LeaseLost before its next write to the program database.
    """
    rt = get_runtime()
    _wave_row(wave_id)  # a missing wave is refused at once, not waited for
    wait = rt.settings.lease_wait_s if wait_s is None else wait_s
    with hold_wave_lease(rt.sessions, wave_id, wait_s=wait, logger=_logger()) as held:
        yield held


def run_wave(wave_id: int, **kwargs) -> dict:
    """The `wave` flow as a subflow run named `wave-<N>`, tagged `prakerja` and `wave-<N>`."""
    with tags("prakerja", f"wave-{wave_id}"):
        summary = wave_flow(wave_id=wave_id, **kwargs)
    pending = summary["report"]["outcomes"].get("PENDING", 0)
    if pending:
        get_run_logger().warning(
            "wave %s: %d registrants pending %s; run the deployment rerun-wave to pick them up",
            wave_id,
            pending,
            summary["report"]["pending"],
        )
    return summary


def _brief(summary: dict) -> dict:
    """What a run returns: counts only (results are stored in clear when persisted)."""
    report = summary["report"]
    return {
        "wave_id": summary["wave_id"],
        "status": report["status"],
        "funnel": report["funnel"],
        "pending": report["pending"],
        "work_left": summary["close"].get("work_left", {}),
    }


# ---------------------------------------------------------------- weekly-wave
@task(name="find-due-wave", cache_policy=NO_CACHE)  # answers from the database
def find_due_wave_task(folder: str) -> dict:
    with get_runtime().sessions() as session:
        existing = wave_ids(session)
    due = drop.due_wave(Path(folder), existing)
    return {
        "existing_max": max(existing) if existing else 0,
        "exports_seen": len(drop.exports_in(Path(folder))),
        "wave_id": due.wave_id if due else None,
        "export": str(due.export.resolve()) if due else None,
        "settings_file": str(due.settings_file) if due else None,
    }


@task(name="create-wave", cache_policy=NO_CACHE)  # answers from the database
def create_wave_task(wave_id: int, export: str, settings_file: str) -> dict:
    """Creates the wave from the drop folder's settings with a fresh lottery seed."""
    from rules.intake import HeaderError, MissingColumnsError
    from tasks.intake import check_header, file_sha256

    values = drop.read_wave_settings(Path(settings_file))
    try:
        check_header(export)
    except (MissingColumnsError, HeaderError) as exc:
        raise SettingsError(f"{Path(export).name}: {exc}") from None
    settings = WaveSettings(
        wave_id=wave_id,
        lottery_seed=secrets.token_hex(16),
        reference_date=values.pop("reference_date", None) or jakarta_today(),
        **values,
    )
    wave, created = create_or_resume_wave(
        get_runtime().sessions,
        settings,
        source_path=export,
        source_sha256=file_sha256(export),
        given=set(values) | {"lottery_seed"},
    )
    return {"wave_id": wave_id, "created": created, "quota": wave.quota}


def emit_export_missing(wave_id: int, folder: Path, exports_seen: int) -> None:
    emit_event(
        event="prakerja.export.missing",
        resource={"prefect.resource.id": f"prakerja.wave.{wave_id}"},
        payload={
            "wave_id": wave_id,
            "expected_file": f"wave-{wave_id}.csv",
            "drop_dir": str(folder.resolve()),
            "exports_seen": exports_seen,
        },
    )


@flow(name="weekly-wave", flow_run_name=_weekly_run_name)
def weekly_wave(credit_overnight: bool = True, drop_dir: str | None = None) -> dict:
    """Runs the wave that is due: the lowest N with a wave-<N>.csv in the drop folder and no
    wave yet. With no export, nothing runs and prakerja.export.missing is raised.

    Args:
        credit_overnight: Leave the rollout (crediting) and the SMS to the overnight-rollout
            deployment, which paces them to the wave's rollout deadline. Off: credit at once.
        drop_dir: The drop folder; empty means $PRAKERJA_DROP_DIR, else ./var/drop.
    """
    install_masking()
    logger = get_run_logger()
    folder = Path(drop_dir) if drop_dir else drop.drop_dir(get_runtime().settings)
    found = find_due_wave_task(str(folder))
    if found["wave_id"] is None:
        expected = found["existing_max"] + 1
        label_run([expected], f"wave-{expected}-weekly-no-export")
        emit_export_missing(expected, folder, found["exports_seen"])
        logger.warning("no export for wave %s in %s: nothing runs", expected, folder.resolve())
        return {"wave_id": expected, "ran": False, "reason": "export missing"}
    wave_id = found["wave_id"]
    label_run([wave_id], f"wave-{wave_id}-weekly")
    create_wave_task(wave_id, found["export"], found["settings_file"])
    # The seed's SHA-256 is public before anyone can see who is eligible.
    publish_draw(wave_id, draw_facts_task(wave_id))
    stages = [s for s in Stage if not (credit_overnight and s in OVERNIGHT_STAGES)]
    with wave_lease(wave_id):
        summary = run_wave(wave_id, registrants_path=found["export"], stages=stages)
    return {"ran": True, **_brief(summary)}


# ---------------------------------------------------------------- overnight-rollout
def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


def _jakarta(moment: datetime) -> str:
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(JAKARTA).strftime("%d %b %H:%M")


@flow(
    name="paced-rollout",
    flow_run_name="wave-{wave_id}-paced-rollout",
    task_runner=batch_task_runner(64),  # threads, or Dask like the wave's stages
)
def paced_rollout(
    wave_id: int,
    batches_per_step: int = 8,
    batch_size: int = 1000,
    margin_minutes: int = 60,
    max_pause_seconds: float = 300.0,
) -> dict:
    """Credits the wave's confirmed participants step by step, paced to its deadline."""
    logger = get_run_logger()
    with get_runtime().sessions() as session:
        deadline = rollout_deadline(session, wave_id)
        confirmed = confirmed_count(session, wave_id)
    ranges = t.plan_batches_task(wave_id, [State.CONFIRMED.value], batch_size)
    steps = [ranges[i : i + batches_per_step] for i in range(0, len(ranges), batches_per_step)]
    total = len(ranges)
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync here
        0.0,
        key=f"wave-{wave_id}-rollout-progress",
        description=f"wave {wave_id} rollout: 0 of {total} batches; deadline "
        f"{_jakarta(deadline)} Asia/Jakarta",
    )

    def advise(steps_left: int, step_s: float):
        return pace(
            now=utcnow(),
            deadline=deadline,
            steps_left=steps_left,
            step_s=step_s,
            margin_s=margin_minutes * 60,
            max_pause_s=max_pause_seconds,
        )

    late_sent = False

    def warn_if_late(p, batches_left: int) -> None:
        nonlocal late_sent
        if not p.late or late_sent:
            return
        late_sent = True
        logger.warning(
            "wave %s rollout: projected finish %s is past the deadline %s",
            wave_id,
            _iso(p.fastest_finish),
            _iso(deadline),
        )
        emit_event(
            event="prakerja.rollout.late",
            resource={"prefect.resource.id": f"prakerja.wave.{wave_id}"},
            payload={
                "wave_id": wave_id,
                "stage": Stage.ROLLOUT.value,
                "confirmed": confirmed,
                "batches_total": total,
                "batches_left": batches_left,
                "projected_finish": _iso(p.fastest_finish),
                "deadline": _iso(deadline),
                "minutes_late": p.minutes_late(deadline),
            },
        )

    if steps:
        warn_if_late(advise(len(steps), 0.0), total)  # the deadline has already passed
    reports: list[dict] = []
    step_times: list[float] = []
    done = 0
    paused = 0.0
    for i, step in enumerate(steps):
        started = time.monotonic()
        futures = [t.credit_task.submit(wave_id, r) for r in step]
        reports += [f.result() for f in futures]
        step_times.append(time.monotonic() - started)
        done += len(step)
        steps_left = len(steps) - i - 1
        p = advise(steps_left, statistics.fmean(step_times))
        warn_if_late(p, total - done)
        update_progress_artifact(
            progress,
            100.0 * done / total,
            description=f"wave {wave_id} rollout: {done} of {total} batches; projected finish "
            f"{_jakarta(p.projected_finish)}, deadline {_jakarta(deadline)} Asia/Jakarta"
            + (" (LATE)" if p.late else ""),
        )
        if steps_left and p.pause_s > 0:
            paused += p.pause_s
            SLEEP(p.pause_s)
    summary = publish_stage(wave_id, Stage.ROLLOUT, reports)
    if ranges:
        summary["reconcile"] = publish_reconcile(wave_id, t.reconcile_task(wave_id))
    summary["pacing"] = {
        "batches": total,
        "steps": len(steps),
        "paused_s": round(paused, 1),
        "deadline": _iso(deadline),
        "late": late_sent,
    }
    return summary


@task(name="waves-to-credit", cache_policy=NO_CACHE)  # answers from the database
def waves_to_credit_task() -> list[dict]:
    with get_runtime().sessions() as session:
        return waves_to_credit(session)


@flow(name="overnight-rollout", flow_run_name=_overnight_run_name)
def overnight_rollout(
    batches_per_step: Annotated[int, Field(ge=1, le=64)] = 8,
    batch_size: Annotated[int, Field(ge=10, le=10_000)] = 1000,
    margin_minutes: Annotated[int, Field(ge=0, le=720)] = 60,
    max_pause_seconds: Annotated[float, Field(ge=0, le=3600)] = 300.0,
) -> dict:
    """Credits every confirmed participant not yet credited, wave by wave, paced so that
    each wave's rollout ends before its rollout_deadline (06:00 Asia/Jakarta by default);
    then sends the SMS and closes the wave when nothing is left.

    Args:
        batches_per_step: Credit batches sent at once; the pause comes between steps.
        batch_size: Participants per credit batch.
        margin_minutes: Aim to finish this long before the deadline.
        max_pause_seconds: Longest pause between two steps (0: no pacing, as fast as the
            issuer allows).
    """
    install_masking()
    waves = waves_to_credit_task()
    if not waves:
        label_run([], "overnight-rollout-nothing-to-credit")
        get_run_logger().info("no confirmed participant waits for a credit")
        return {"waves": []}
    lease_wait_s = get_runtime().settings.lease_wait_s
    numbers = [w["wave_id"] for w in waves]
    label_run(numbers, "wave-" + "+".join(map(str, numbers)) + "-overnight-rollout")
    results = []
    for w in waves:
        wave_id = w["wave_id"]
        # A wave still being run (e.g. its weekly run) is waited for, up to its deadline.
        wait_s = max(lease_wait_s, (w["rollout_deadline"] - utcnow()).total_seconds())
        with wave_lease(wave_id, wait_s=wait_s), tags("prakerja", f"wave-{wave_id}"):
            rollout = paced_rollout(
                wave_id,
                batches_per_step=batches_per_step,
                batch_size=batch_size,
                margin_minutes=margin_minutes,
                max_pause_seconds=max_pause_seconds,
            )
            summary = run_wave(wave_id, stages=[Stage.ANNOUNCE], keep_open=w["keep_open"])
        results.append({**_brief(summary), "rollout": rollout["counts"], **rollout["pacing"]})
    return {"waves": results}


# ---------------------------------------------------------------- rerun-wave, raise-quota
@flow(name="rerun-wave", flow_run_name=_rerun_run_name)
def rerun_wave(
    wave_id: WaveId,
    stages: list[Stage] | None = None,
    draw_without_pending: bool = False,
) -> dict:
    """Resumes a wave: every stage still to do, or only the chosen stages; each stage only
    picks up the work still pending (e.g. registrants a partner failure left pending).

    Args:
        wave_id: The wave's number.
        stages: The stages to run, in wave order; empty means every stage.
        draw_without_pending: Draw even if some registrants still wait on a partner
            (recorded on the wave; those who become eligible later join the waitlist).
    """
    install_masking()
    label_run([wave_id])
    with wave_lease(wave_id):
        keep_open = _wave_row(wave_id).keep_open
        summary = run_wave(
            wave_id,
            stages=list(stages) if stages else None,
            draw_without_pending=draw_without_pending,
            keep_open=keep_open,
        )
    return _brief(summary)


@task(name="raise-quota", cache_policy=NO_CACHE)  # answers from the database
def raise_quota_task(wave_id: int, quota: int, lease_owner: str) -> dict:
    """Changes the wave only while it is open and this run's lease holds it."""
    from tasks.draw import raise_quota

    return raise_quota(get_runtime().sessions, wave_id, quota, lease_owner=lease_owner)


@flow(name="raise-quota", flow_run_name=_raise_quota_run_name)
def raise_quota_flow(
    wave_id: WaveId,
    quota: Quota,
) -> dict:
    """Raises an open wave's quota (never lowers it) and processes the new seats: they are
    drawn from the waitlist in draw order, checked and credited like the others.

    Args:
        wave_id: The wave's number (it must be open).
        quota: The new quota: participants to fund in this wave, at least the current one.
    """
    install_masking()
    label_run([wave_id])
    with wave_lease(wave_id) as held:
        raised = raise_quota_task(wave_id, quota, held.lease.owner)
        keep_open = _wave_row(wave_id).keep_open
        summary = run_wave(wave_id, keep_open=keep_open)
    return {"quota": raised, **_brief(summary)}
