"""Pacing of the overnight rollout: spread the credit batches so they end before the deadline.

The rule (docs/operations.md): the rollout works in steps of a few batches at a time.
After each step it knows how long a step takes (the mean of the steps so far) and how many
steps are left. It aims to finish `margin` before the wave's `rollout_deadline` and spreads
the time it does not need evenly between the remaining steps, each pause capped at
`max_pause`. So a small wave is credited within a few capped pauses, a large one runs
back to back, and the issuer never sees the whole night's credits in one burst.

The projected finish is when the last step would end at this pace; the rollout is late
when even without any pause (`fastest_finish`) it would end after the deadline.
Pure: no clock, no I/O; times are naive UTC like `Wave.rollout_deadline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Pace:
    pause_s: float  # wait this long before the next step
    projected_finish: datetime  # the last step ends then, pausing as advised
    fastest_finish: datetime  # the last step ends then, with no pause at all
    late: bool  # fastest_finish is after the deadline

    def minutes_late(self, deadline: datetime) -> int:
        return max(0, int((self.fastest_finish - deadline).total_seconds() // 60))


def pace(
    *,
    now: datetime,
    deadline: datetime,
    steps_left: int,
    step_s: float,
    margin_s: float,
    max_pause_s: float,
) -> Pace:
    """The pause before the next step and the projections, given what is left."""
    if steps_left < 0 or step_s < 0 or margin_s < 0 or max_pause_s < 0:
        raise ValueError("steps_left, step_s, margin_s and max_pause_s must not be negative")
    work = timedelta(seconds=steps_left * step_s)
    fastest = now + work
    if steps_left == 0:
        return Pace(0.0, now, now, now > deadline)
    target = deadline - timedelta(seconds=margin_s)
    slack_s = (target - fastest).total_seconds()
    pause_s = min(max(slack_s / steps_left, 0.0), max_pause_s)
    projected = fastest + timedelta(seconds=pause_s * steps_left)
    return Pace(pause_s, projected, fastest, fastest > deadline)


class Pacing(BaseModel):
    """How the overnight rollout paces its credits (the overnight-rollout parameters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batches_per_step: Annotated[
        int, Field(ge=1, le=64, description="Credit batches sent at once; pauses between steps.")
    ] = 8
    batch_size: Annotated[
        int, Field(ge=10, le=10_000, description="Participants per credit batch.")
    ] = 1000
    margin_minutes: Annotated[
        int, Field(ge=0, le=720, description="Aim to finish this long before the deadline.")
    ] = 60
    max_pause_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=3600,
            description="Longest pause between two steps (0: no pacing, as fast as the "
            "issuer allows).",
        ),
    ] = 300.0
