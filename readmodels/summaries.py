"""What a run hands back across a layer: typed, never a bare dict indexed by strings.

The wave flow returns a `WaveSummary` (its stages' `StageSummary`, how the close went,
the wave's report and, when the wave waits for one, its `SignOffStatus`); the run service
(services/runs.py) returns it inside its `RunOutcome`; the CLI and the deployment flows
read its fields. Counts only, never a person. `report` stays the document of
`prakerja wave report --json` (interfaces.md), which outside tools read by its keys.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True)

    by: str
    at: Any = None
    signed: bool = False
    key: str | None = None  # the signing key's fingerprint


class SignOffStatus(BaseModel):
    """The wave as an approver sees it (wave-rules.md, "Sign-off before money"): its
    facts, the valid approvals, and whether it waits (`not_waiting` says why not)."""

    model_config = ConfigDict(frozen=True)

    wave_id: int
    required: int = 0
    approvals: list[Approval] = Field(default_factory=list)
    approved: bool = True
    waiting: bool = False
    not_waiting: str | None = None
    seats: int | dict[str, int] | None = None
    confirmed: int = 0
    training_balance: int = 0
    total_amount: int = 0
    digest: str = ""
    signed: bool = False  # an approvers file: approvals need their approver's signature

    @property
    def approvers(self) -> str:
        return ", ".join(a.by for a in self.approvals) or "none yet"

    def seats_text(self) -> str:
        if isinstance(self.seats, dict):
            return ", ".join(f"{p}: {n:,}" for p, n in sorted(self.seats.items()))
        return f"{self.seats:,}" if self.seats is not None else "-"


class Failure(BaseModel):
    """Items a partner left pending in a stage: counts by partner and error class."""

    model_config = ConfigDict(frozen=True)

    partner: str
    error_class: str
    needs_person: bool = False
    items: int = 0


class StageSummary(BaseModel):
    """One stage of one run: its counts (outcomes and reasons given, records handled),
    the partner failures it left pending, how long it took, and what some stages add."""

    stage: str
    counts: dict[str, int] = Field(default_factory=dict)
    failures: list[Failure] = Field(default_factory=list)
    seconds: float = 0.0
    sign_off: SignOffStatus | None = None  # rollout: held for sign-off
    pacing: dict[str, Any] | None = None  # rollout, paced: steps and pauses
    reconcile: dict[str, Any] | None = None  # rollout: the ledger against the statement
    portal_index: dict[str, Any] | None = None  # intake: the dashboard's index


class CloseResult(BaseModel):
    closed: bool = False
    work_left: dict[str, int] = Field(default_factory=dict)


class WaveSummary(BaseModel):
    """A run of the `wave` flow: the stages it ran, how the close went, the wave's
    report after it, and its sign-off status when it waits for one."""

    wave_id: int
    stages: dict[str, StageSummary] = Field(default_factory=dict)
    close: CloseResult = Field(default_factory=CloseResult)
    report: dict[str, Any] = Field(default_factory=dict)
    sign_off: SignOffStatus | None = None
    flow_run_id: str | None = None
    flow_run_name: str | None = None

    @property
    def pending(self) -> int:
        """Registrants waiting on a partner (PENDING in the report)."""
        return int(self.report.get("outcomes", {}).get("PENDING", 0))

    @property
    def pending_by_stage(self) -> dict[str, int]:
        return {k: int(v) for k, v in (self.report.get("pending") or {}).items() if v}

    @property
    def waits_for_sign_off(self) -> bool:
        return bool(self.sign_off is not None and self.sign_off.waiting)

    def brief(self) -> dict[str, Any]:
        """What a deployment's run returns: counts only (results are stored in clear when
        persisted)."""
        return {
            "wave_id": self.wave_id,
            "status": self.report.get("status"),
            "funnel": self.report.get("funnel"),
            "pending": self.report.get("pending"),
            "work_left": self.close.work_left,
        }
