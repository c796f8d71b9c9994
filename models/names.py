"""Names the outside world keys on: Prefect event names and flow names.

Automations match events and flow runs by these strings, operators filter the UI by
them, and acceptance suites listen for them: each is spelled once, here.
"""

from __future__ import annotations

from models.enums import Stage

# ---------------------------------------------------------------- events (operations.md)
PARTNER_FAILED = "prakerja.partner.failed"
WAVE_COMPLETED = "prakerja.wave.completed"
WAVE_PENDING = "prakerja.wave.pending"
CREDIT_REJECTED = "prakerja.credit.rejected"
ROLLOUT_LATE = "prakerja.rollout.late"
RECONCILE_MISMATCH = "prakerja.reconcile.mismatch"
EXPORT_MISSING = "prakerja.export.missing"
# Wrong sign-in codes on the dashboard above PRAKERJA_PORTAL_GUESS_ALERT a minute.
PORTAL_GUESSING = "prakerja.portal.guessing"
PORTAL_RESOURCE = "prakerja.portal"  # the dashboard, as the resource of its events

# ---------------------------------------------------------------- flows
WAVE_FLOW = "wave"
# One subflow per stage, named as the stage (runs named wave-<N>-<stage>).
STAGE_FLOWS = tuple(stage.value for stage in Stage)
# The deployments' flows (flows/operations.py); each is also its deployment's name.
WEEKLY_WAVE = "weekly-wave"
OVERNIGHT_ROLLOUT = "overnight-rollout"
RERUN_WAVE = "rerun-wave"
RAISE_QUOTA = "raise-quota"
DAILY_PAYOUTS = "daily-payouts"
OPERATION_FLOWS = (WEEKLY_WAVE, OVERNIGHT_ROLLOUT, RERUN_WAVE, RAISE_QUOTA, DAILY_PAYOUTS)
# The payout run's flow and its stage subflows (flows/payout.py).
PAYOUT_FLOW = "payout"
# Payout runs' events (operations.md, "Alerts"); resource prakerja.payout.<as-of>.
PAYOUT_COMPLETED = "prakerja.payout.completed"
PAYOUT_PENDING = "prakerja.payout.pending"
PAYOUT_AWAITING_SIGN_OFF = "prakerja.payout.awaiting-sign-off"
PAYOUT_STOPPED = "prakerja.payout.stopped"
PAYOUT_MISMATCH = "prakerja.payout.mismatch"


def wave_resource(wave_id: int) -> str:
    """The Prefect resource id of a wave, in events and related resources."""
    return f"prakerja.wave.{wave_id}"


def partner_resource(partner_id: str) -> str:
    return f"prakerja.partner.{partner_id}"
