"""How a stored registrant state reads to operators: outcome and reason (interfaces.md)."""

from rules.enums import Outcome, PendingReason, State

_PENDING_AT = {
    State.AWAIT_LOCAL: PendingReason.PENDING_ELIGIBILITY,
    State.AWAIT_IDENTITY: PendingReason.PENDING_IDENTITY,
    State.AWAIT_SCREENING: PendingReason.PENDING_SCREENING,
}
_PENDING_IF_FAILED = {
    State.SELECTED: (Outcome.SELECTED, PendingReason.PENDING_ACCOUNT),
    State.CONFIRMED: (Outcome.CONFIRMED, PendingReason.PENDING_ROLLOUT),
}
_PLAIN = {
    State.ELIGIBLE: Outcome.ELIGIBLE,
    State.WAITLISTED: Outcome.WAITLISTED,
    State.CREDITED: Outcome.CREDITED,
}


def outcome_of(state: str, reason: str | None, pending_stage: str | None) -> tuple[str, str]:
    """(outcome, reason) for export/report/explain; reason is "" where it has none."""
    st = State(state)
    if st in (State.REJECTED, State.NOT_SELECTED):
        return (Outcome.REJECTED if st == State.REJECTED else Outcome.NOT_SELECTED), reason or ""
    if st in _PENDING_AT:
        return Outcome.PENDING, _PENDING_AT[st]
    if st in _PENDING_IF_FAILED:
        plain, pending = _PENDING_IF_FAILED[st]
        return (Outcome.PENDING, pending) if pending_stage else (plain, "")
    return _PLAIN[st], ""
