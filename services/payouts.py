"""Starting (or resuming) a payout run for a date: once, for every entry.

`prakerja payout run` (cli/payout.py) and the `daily-payouts` deployment
(flows/operations.py) start a payout run here, as waves start in services/runs.py: the
same lease (services/lease.py, on the payout runs' one lease row: two payout runs never
interleave), the same audit trail, the same failure boundary, the same ends (`RunEnd`).

    start_payout_run(app, as_of, sign_off=..., run_flow=...)  -> PayoutOutcome

`run_flow` is the payout flow as the caller runs it (flows/payout.py run_payout_flow);
services/ stands below the flows, so it is handed the flow, never imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, insert, or_, select, update

from models.queries import utcnow
from models.tables import Participant, Payment, PayoutLease, PayoutRun
from rules.masking import error_text
from runtime.app import App
from services.lease import HeldLease, hold_wave_lease
from services.runs import RunEnd
from tasks import audit
from tasks.waves import PAYOUT_LEASE, WaveBusyError

RUN = PayoutRun.__table__  # type: ignore[attr-defined]
LEASE = PayoutLease.__table__  # type: ignore[attr-defined]
Y = Payment.__table__  # type: ignore[attr-defined]
P = Participant.__table__  # type: ignore[attr-defined]

RunPayoutFlow = Callable[[date, str], dict[str, Any]]


@dataclass(frozen=True)
class PayoutOutcome:
    end: RunEnd
    as_of: date
    message: str = ""
    result: dict[str, Any] | None = None
    run_name: str = ""


def _ensure_lease_row(app: App) -> None:
    with app.sessions() as session, session.begin():
        conn = session.connection()
        if conn.execute(select(LEASE.c.name).where(LEASE.c.name == "payout")).first() is None:
            try:
                with session.begin_nested():
                    conn.execute(insert(LEASE), [{"name": "payout"}])
            except Exception:  # noqa: BLE001 - another run made it meanwhile
                pass


def _open_run(app: App, as_of: date, sign_off: int | None, actor: audit.Actor, via: str) -> str:
    """Creates the run's row (`payout-<as-of>`) or resumes it (`...-rerun-<k>`), audited."""
    with app.sessions() as session, session.begin():
        conn = session.connection()
        row = conn.execute(select(RUN).where(RUN.c.as_of == as_of)).first()
        now = utcnow()
        name = f"payout-{as_of.isoformat()}"
        if row is None:
            need = sign_off or 0
            conn.execute(
                insert(RUN),
                [
                    {
                        "as_of": as_of,
                        "status": "running",
                        "sign_off": need,
                        "reruns": 0,
                        "started_at": now,
                    }
                ],
            )
            before = None
        else:
            need = row.sign_off if sign_off is None else sign_off
            reruns = row.reruns + 1
            conn.execute(
                update(RUN)
                .where(RUN.c.as_of == as_of)
                .values(status="running", reruns=reruns, sign_off=need, finished_at=None)
            )
            name = f"{name}-rerun-{reruns}"
            before = {"sign_off": row.sign_off, "status": row.status}
        audit.append(
            session,
            actor,
            "payout.run",
            before=before,
            after={"as_of": as_of.isoformat(), "run": name, "sign_off": need, "via": via},
        )
    return name


def work_pending(app: App, as_of: date) -> int:
    """Payments due by as-of still unsettled, and revocations still unanswered."""
    with app.sessions() as session:
        payments = session.execute(
            select(func.count()).where(Y.c.status.in_(["DUE", "SENDING"]), Y.c.due_on <= as_of)
        ).scalar_one()
        revocations = session.execute(
            select(func.count()).where(
                P.c.revoke_status == "SENDING",
                or_(P.c.state == "AWAITING_TRAINING", P.c.state == "IN_TRAINING"),
            )
        ).scalar_one()
    return int(payments) + int(revocations)


def start_payout_run(
    app: App,
    as_of: date,
    *,
    run_flow: RunPayoutFlow,
    sign_off: int | None = None,
    by: str | None = None,
    via: str = "cli",
    actor: audit.Actor | None = None,
    wait_s: float | None = None,
    on_lost: Callable[[HeldLease], None] | None = None,
) -> PayoutOutcome:
    """Holds the payout lease, opens (or resumes) the run of `as_of`, runs the flow, and
    says how it ended: DONE, PENDING (a partner failed: rerun later), SIGN_OFF (the run
    waits for approvals before paying), BUSY (another live payout run), FAILED."""
    if sign_off is not None and not 0 <= sign_off <= 2:
        return PayoutOutcome(RunEnd.REFUSED, as_of, "--sign-off: must be 0, 1 or 2")
    actor = actor or audit.Actor.here(by)
    _ensure_lease_row(app)
    try:
        with hold_wave_lease(app.sessions, PAYOUT_LEASE, wait_s=wait_s, on_lost=on_lost):
            name = _open_run(app, as_of, sign_off, actor, via)
            try:
                result = run_flow(as_of, name)
            except Exception as exc:  # noqa: BLE001 - the flow run says why; one line here
                _close_run(app, as_of, "failed", None)
                return PayoutOutcome(RunEnd.FAILED, as_of, error_text(exc), None, name)
            pending = work_pending(app, as_of)
            if result.get("sign_off"):
                end = RunEnd.SIGN_OFF
            elif pending or result.get("pending"):
                end = RunEnd.PENDING
            else:
                end = RunEnd.DONE
            _close_run(app, as_of, end.value, result)
            return PayoutOutcome(end, as_of, "", result, name)
    except WaveBusyError as exc:
        return PayoutOutcome(RunEnd.BUSY, as_of, str(exc))


def _close_run(app: App, as_of: date, status: str, result: dict | None) -> None:
    with app.sessions() as session, session.begin():
        session.connection().execute(
            update(RUN)
            .where(RUN.c.as_of == as_of)
            .values(
                status=status,
                finished_at=utcnow(),
                counts_json=json.dumps(
                    {k: v.get("counts", {}) for k, v in (result or {}).get("stages", {}).items()},
                    default=str,
                )
                if result
                else None,
            )
        )
