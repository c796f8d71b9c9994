"""The `payout` flow (lifecycle.md, "Payout runs"): one subflow per stage.

    training-events  every platform's feed from its cursor, then what the events say
    revocation       past the deadline or blacklisted before training: cards closed
    due              incentive installments and survey payments due by as-of
    recheck          blacklist, excluding agencies, the registry's deceased flag
    disburse         the checked payments (not before enough approvals, if required)
    reconcile        the run's payments against each payment partner's statement

Every stage picks up only what is still to do: a rerun of the same date resumes it.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from prefect import get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from runtime.app import current
from runtime.boundary import flow, task
from tasks import payout as p
from tasks import payout_signoff

RESOURCE = "prakerja.payout"


@task(name="read-feed")
def read_feed_task(platform_index: int) -> dict:
    app = current()
    client = app.partners.platforms[platform_index]
    return p.read_feed(app.sessions, client).as_dict()


@task(name="derive-training")
def derive_training_task(as_of: date) -> dict:
    return p.derive_training(current().sessions, as_of).as_dict()


@task(name="enroll")
def enroll_task(as_of: date) -> dict:
    return p.enroll(current().sessions, as_of).as_dict()


@task(name="revoke")
def revoke_task(as_of: date) -> dict:
    app = current()
    return p.revoke(app.sessions, app.partners.issuer, as_of).as_dict()


@task(name="make-due")
def make_due_task(as_of: date) -> dict:
    return p.make_due(current().sessions, as_of).as_dict()


@task(name="recheck")
def recheck_task(as_of: date) -> dict:
    app = current()
    return p.recheck(app.sessions, app.partners, as_of).as_dict()


@task(name="disburse")
def disburse_task(as_of: date) -> dict:
    app = current()
    report = p.disburse(app.sessions, app.partners.payments, as_of).as_dict()
    report["counts"]["completed_participants"] = p.complete_participants(app.sessions, as_of)
    return report


@task(name="payout-reconcile")
def reconcile_task(as_of: date) -> dict:
    app = current()
    return p.reconcile(app.sessions, app.partners.payments, as_of)


def _merge(stage: str, reports: list[dict]) -> dict:
    counts: dict[str, int] = {}
    failures: dict[str, str] = {}
    pending = 0
    for r in reports:
        for k, v in r.get("counts", {}).items():
            counts[k] = counts.get(k, 0) + int(v)
        failures.update(r.get("failures", {}))
        pending += int(r.get("pending", 0))
    return {"stage": stage, "counts": counts, "failures": failures, "pending": pending}


@flow(name="training-events", flow_run_name="payout-{as_of}-training-events")
def training_events_stage(as_of: date) -> dict:
    enrolled = enroll_task(as_of)
    feeds = [read_feed_task.submit(i) for i in range(len(current().partners.platforms))]
    reports = [enrolled, *(f.result() for f in feeds)]
    reports.append(derive_training_task(as_of))
    return _merge("training-events", reports)


@flow(name="revocation", flow_run_name="payout-{as_of}-revocation")
def revocation_stage(as_of: date) -> dict:
    return _merge("revocation", [revoke_task(as_of)])


@flow(name="due", flow_run_name="payout-{as_of}-due")
def due_stage(as_of: date) -> dict:
    return _merge("due", [make_due_task(as_of)])


@flow(name="recheck", flow_run_name="payout-{as_of}-recheck")
def recheck_stage(as_of: date) -> dict:
    report = _merge("recheck", [recheck_task(as_of)])
    stopped = {
        k[len("stopped_") :].upper(): v
        for k, v in report["counts"].items()
        if k.startswith("stopped_")
    }
    if stopped:
        emit_event(
            event="prakerja.payout.stopped",
            resource={"prefect.resource.id": f"{RESOURCE}.{as_of.isoformat()}"},
            payload={"as_of": as_of.isoformat(), "stopped": stopped},
        )
    return report


@flow(name="disburse", flow_run_name="payout-{as_of}-disburse")
def disburse_stage(as_of: date) -> dict:
    status = payout_signoff.status(current().sessions, as_of, approvers=current().approvers)
    if not status["approved"]:
        emit_event(
            event="prakerja.payout.awaiting-sign-off",
            resource={"prefect.resource.id": f"{RESOURCE}.{as_of.isoformat()}"},
            payload={k: status[k] for k in ("as_of", "payments", "total_amount", "required")},
        )
        create_markdown_artifact(
            key=f"payout-{as_of.isoformat()}-sign-off",
            markdown=payout_signoff.markdown(status),
            description=f"payout run {as_of.isoformat()}: waiting for sign-off",
        )
        return {"stage": "disburse", "counts": {}, "failures": {}, "pending": 0, "sign_off": status}
    return _merge("disburse", [disburse_task(as_of)])


@flow(name="payout-reconcile", flow_run_name="payout-{as_of}-reconcile")
def reconcile_stage(as_of: date) -> dict:
    result = reconcile_task(as_of)
    if not result["ok"]:
        emit_event(
            event="prakerja.payout.mismatch",
            resource={"prefect.resource.id": f"{RESOURCE}.{as_of.isoformat()}"},
            payload={
                "as_of": as_of.isoformat(),
                "partners": {k: v["ok"] for k, v in result["partners"].items()},
            },
        )
    return result


STAGES = ("training-events", "revocation", "due", "recheck", "disburse", "reconcile")


@flow(name="payout")
def payout(as_of: date, run_name: str = "") -> dict[str, Any]:
    """Runs every stage of the payout run for `as_of`; returns each stage's report."""
    runbook = [
        ("training-events", training_events_stage),
        ("revocation", revocation_stage),
        ("due", due_stage),
        ("recheck", recheck_stage),
        ("disburse", disburse_stage),
        ("reconcile", reconcile_stage),
    ]
    stages: dict[str, Any] = {}
    key = f"payout-{as_of.isoformat()}"
    for name, stage in runbook:
        started = time.monotonic()
        done = stage(as_of)
        done["seconds"] = round(time.monotonic() - started, 3)
        get_run_logger().info("%s %s: %s", key, name, done.get("counts", {}))
        stages[name] = done
        if name == "disburse" and "sign_off" in done:
            break  # nothing is paid, so there is nothing to reconcile
    pending = sum(int(s.get("pending", 0)) for s in stages.values() if isinstance(s, dict))
    waiting = "sign_off" in stages.get("disburse", {})
    if not waiting:
        emit_event(
            event="prakerja.payout.pending" if pending else "prakerja.payout.completed",
            resource={"prefect.resource.id": f"{RESOURCE}.{as_of.isoformat()}"},
            payload={"as_of": as_of.isoformat(), "pending": pending},
        )
    return {"as_of": as_of.isoformat(), "stages": stages, "pending": pending, "sign_off": waiting}


def run_payout_flow(as_of: date, run_name: str) -> dict[str, Any]:
    """The `payout` flow named `run_name`, tagged `prakerja` and `payout`; its result with
    its flow run's id. A failed run raises its (cleaned) failure."""
    with tags("prakerja", "payout"):
        state = payout.with_options(flow_run_name=run_name)(
            as_of=as_of, run_name=run_name, return_state=True
        )
    result = state.result()
    result["flow_run_id"] = str(state.state_details.flow_run_id)
    result["flow_run_name"] = run_name
    return result
