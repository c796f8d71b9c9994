"""The overnight rollout's pacing: credit batches in steps, spread to end before the
wave's rollout deadline (rules/pacing.py decides each pause), with a progress artifact
`wave-<N>-rollout-progress` and `prakerja.rollout.late` when even no pause is too slow.

Used by the one rollout stage (flows/wave.py) when the run asks for pacing.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.events import emit_event

from models import names
from models.enums import Stage
from rules.pacing import Pacing, pace
from rules.settings import JAKARTA
from runtime.execution import Execution
from tasks import batches as t
from tasks.common import utcnow
from tasks.operations import rollout_facts_task

# Injected in tests (the pacing never really sleeps there).
SLEEP = time.sleep


def iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


def _jakarta(moment: datetime) -> str:
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(JAKARTA).strftime("%d %b %H:%M")


def credit_paced(
    wave_id: int, ranges: list[tuple[int, int]], execution: Execution, pacing: Pacing
) -> tuple[list[dict], dict]:
    """Credits `ranges` step by step, paced to the wave's deadline: the batch reports and
    what the pacing did."""
    logger = get_run_logger()
    facts = rollout_facts_task(wave_id)
    deadline, confirmed = facts["deadline"], facts["confirmed"]
    per = pacing.batches_per_step
    steps = [ranges[i : i + per] for i in range(0, len(ranges), per)]
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
            margin_s=pacing.margin_minutes * 60,
            max_pause_s=pacing.max_pause_seconds,
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
            iso(p.fastest_finish),
            iso(deadline),
        )
        emit_event(
            event=names.ROLLOUT_LATE,
            resource={"prefect.resource.id": names.wave_resource(wave_id)},
            payload={
                "wave_id": wave_id,
                "stage": Stage.ROLLOUT.value,
                "confirmed": confirmed,
                "batches_total": total,
                "batches_left": batches_left,
                "projected_finish": iso(p.fastest_finish),
                "deadline": iso(deadline),
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
        futures = [t.credit_task.submit(wave_id, r, execution) for r in step]
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
    return reports, {
        "batches": total,
        "steps": len(steps),
        "paused_s": round(paused, 1),
        "deadline": iso(deadline),
        "late": late_sent,
    }
