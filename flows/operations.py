"""The operation flows: what the deployments of operations.md run (deployments/ declares
them: prefect.yaml, `prakerja serve`, the automations).

| flow (= deployment)  | run name                          | does                              |
| -------------------- | --------------------------------- | --------------------------------- |
| `weekly-wave`        | `wave-<N>-weekly`                 | runs the due wave (drop folder)   |
| `overnight-rollout`  | `wave-<N>-overnight-rollout`      | credits the confirmed, paced      |
| `rerun-wave`         | `wave-<N>-rerun-<stamp>-<4 hex>`  | resumes a wave (all/chosen stages)|
| `raise-quota`        | `wave-<N>-raise-quota-<Q>`        | raises the quota, new seats       |
| `daily-payouts`      | `daily-payouts-<as-of>`           | today's payout run (lifecycle.md) |

(`<stamp>`: `YYYYmmdd-HHMMSS`, Jakarta time.)

Every run is tagged `prakerja` and `wave-<N>`, holds the wave's lease (services/lease.py) while
it works on the wave, and runs the `wave` flow (named `wave-<N>`) for the stages: the same
stage subflows as `prakerja wave run` (the overnight rollout is the rollout stage, paced).
Parameters are typed, so the UI's run form shows choices and bounds and the server refuses
a wrong value when the run is created. Descriptions come from the docstrings' Args.
(No `from __future__ import annotations` here: Prefect reads the annotations.)
"""

import logging
import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated

from prefect import get_run_logger
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout, MissingContextError
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run as current_run
from pydantic import Field

from flows.publish import publish_awaiting_sign_off, publish_draw
from flows.wave import run_wave_flow
from models import names
from models.enums import Stage
from readmodels.summaries import SignOffStatus, WaveSummary
from rules.money import rupiah
from rules.pacing import Pacing
from rules.settings import JAKARTA, Quota, WaveId
from runtime.app import current
from runtime.boundary import flow
from runtime.log_masking import install_masking
from services.payouts import start_payout_run
from services.runs import RunEnd, RunOutcome, raise_quota, run_wave
from tasks import batches as t
from tasks import drop
from tasks.common import utcnow
from tasks.operations import (
    actor_here,
    audit_task,
    create_wave_task,
    draw_facts_task,
    find_due_wave_task,
    raise_quota_task,
    record_sign_off_task,
    waves_to_credit_task,
)
from tasks.waves import WaveBusyError

# Stages the weekly wave leaves to the overnight rollout when credit_overnight is on.
OVERNIGHT_STAGES = (Stage.ROLLOUT, Stage.ANNOUNCE)

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


def _run_flow(wave_id: int, **options) -> WaveSummary:
    """The `wave` flow as a subflow of this run (flows/wave.py), for the run service; a
    run that leaves registrants pending says how to pick them up."""
    summary = run_wave_flow(wave_id, **options)
    if summary.pending:
        get_run_logger().warning(
            "wave %s: %d registrants pending %s; run the deployment rerun-wave to pick them up",
            wave_id,
            summary.pending,
            summary.pending_by_stage,
        )
    return summary


def _finished(outcome: RunOutcome) -> WaveSummary:
    """The run service's outcome as this flow run's end: a summary, or the run fails with
    its one line (a missing wave, a wave another run holds past the wait, a failure)."""
    if outcome.summary is None or outcome.end in (RunEnd.FAILED, RunEnd.BUSY, RunEnd.REFUSED):
        if outcome.end == RunEnd.BUSY:
            raise WaveBusyError(outcome.message)
        raise RuntimeError(outcome.message or f"wave {outcome.wave_id}: {outcome.end}")
    return outcome.summary


def _lease_wait_s() -> float:
    """How long a deployment's run waits for a wave another live run holds
    (PRAKERJA_LEASE_WAIT_S, default 600 s), then fails: one wave never runs twice at once.
    A holder that died is replaced at once (same host) or after its 60 s lease (another
    host). A run whose lease another run took (after a pause or an outage longer than the
    lease) fails with LeaseLost before its next write to the program database."""
    return current().settings.lease_wait_s


# ---------------------------------------------------------------- sign-off (pause, form)
SIGNATURE_HELP = (
    "Your signature of this digest (base64): the output of `prakerja sign --kind {kind} "
    "--id {ident} --digest <the digest> --key <your key>`. Required when the program has an "
    "approvers file; leave empty when approvals are unsigned."
)


class SignOffForm(RunInput):
    """The form of a run paused for sign-off (operations.md): the wave as it stands,
    then the approver's name, their signature (under an approvers file) and an explicit
    approval. The facts are filled in; an approval whose digest is not the wave's as it
    stands now, or whose signature is not the approver's over it, is refused."""

    approver: str = Field(description="Your name, as the audit trail will show it.")
    approve: bool = Field(
        default=False, description="I approve crediting this wave exactly as shown."
    )
    signature: str = Field(
        default="", description=SIGNATURE_HELP.format(kind="wave", ident="<the wave>")
    )
    wave: int = Field(description="The wave.")
    seats: str = Field(description="Its seats (the quota, or seats by province).")
    confirmed_participants: int = Field(description="Participants to credit.")
    total_rupiah: int = Field(description="The total amount, in rupiah.")
    draw_digest: str = Field(description="SHA-256 of the seed, seats and confirmed list.")


def _form(status: SignOffStatus) -> type[SignOffForm]:
    seats = status.seats
    shown = (
        ", ".join(f"{p}: {n}" for p, n in sorted(seats.items()))
        if isinstance(seats, dict)
        else str(seats)
    )
    description = (
        f"## Wave {status.wave_id} waits for sign-off\n\n"
        f"- seats: **{shown}**\n- confirmed participants: **{status.confirmed}**\n"
        f"- total amount: **{rupiah(status.total_amount)}**\n"
        f"- draw digest: `{status.digest}`\n\n"
        f"Approvals: {len(status.approvals)} of {status.required} ({status.approvers}). "
        "Type your name and tick *approve* to approve crediting this wave as shown; "
        "each approver must be a different person.\n\n"
        + _signing_note("wave", str(status.wave_id), status.digest, status.signed)
    )
    return SignOffForm.with_initial_data(
        description=description,
        approver="",
        approve=False,
        signature="",
        wave=status.wave_id,
        seats=shown,
        confirmed_participants=status.confirmed,
        total_rupiah=status.total_amount,
        draw_digest=status.digest,
    )


def _signing_note(kind: str, ident: str, digest: str, signed: bool) -> str:
    if not signed:
        return (
            "Approvals are **unsigned**: the program has no approvers file "
            "(PRAKERJA_APPROVERS), so the name typed here is not checked; leave *signature* "
            "empty."
        )
    return (
        "Approvals are **signed**: paste into *signature* the output of\n\n"
        f"`prakerja sign --kind {kind} --id {ident} --digest {digest} --key <your key>`\n\n"
        "run where your private key is; it is checked against your key in the approvers file."
    )


def await_sign_off(wave_id: int, announce: bool = False) -> SignOffStatus:
    """While the wave waits for sign-off: pause this run with the form, record each
    approval submitted, until enough different people approved (or the form is not
    answered within PRAKERJA_SIGN_OFF_WAIT_S). Called outside the wave's lease: a paused run
    holds nothing that keeps the overnight rollout from crediting the wave once approved."""
    logger = get_run_logger()
    status = t.sign_off_status_task(wave_id)
    if announce:
        publish_awaiting_sign_off(wave_id, status)
    while status.waiting:
        try:
            answer = pause_flow_run(
                wait_for_input=_form(status), timeout=int(current().settings.sign_off_wait_s)
            )
        except FlowPauseTimeout:
            logger.warning("wave %s: no sign-off through the form in time", wave_id)
            break
        if not answer.approve:
            logger.warning("wave %s: the form was sent without 'approve': not approved", wave_id)
        else:
            got = record_sign_off_task(
                wave_id,
                answer.approver,
                answer.draw_digest,
                answer.signature,
                current_run.name or "",
            )
            if "refused" in got:
                logger.warning("wave %s: approval refused: %s", wave_id, got["refused"])
            else:
                logger.info(
                    "wave %s: approved by %s (%d of %d)",
                    wave_id,
                    answer.approver.strip(),
                    len(got["approvals"]),
                    got["required"],
                )
        status = t.sign_off_status_task(wave_id)
    return status


# ---------------------------------------------------------------- weekly-wave
def emit_export_missing(wave_id: int, folder: Path, exports_seen: int) -> None:
    emit_event(
        event=names.EXPORT_MISSING,
        resource={"prefect.resource.id": names.wave_resource(wave_id)},
        payload={
            "wave_id": wave_id,
            "expected_file": f"wave-{wave_id}.csv",
            "drop_dir": str(folder.resolve()),
            "exports_seen": exports_seen,
        },
    )


@flow(name=names.WEEKLY_WAVE, flow_run_name=_weekly_run_name)
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
    folder = Path(drop_dir) if drop_dir else drop.drop_dir(current().settings)
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
    # Sign-off (wave-rules.md): the form, outside the lease; approved, the rollout credits
    # now, or the overnight rollout does (credit_overnight).
    outcome = run_wave(
        current(),
        wave_id,
        run_flow=_run_flow,
        registrants=found["export"],
        stages=stages,
        keep_open=False,
        wait_s=_lease_wait_s(),
        sign_off=lambda w, s: (
            await_sign_off(w, announce=credit_overnight).approved and s.waits_for_sign_off
        ),
        reraise=True,
        logger=_logger(),
    )
    return {"ran": True, **_finished(outcome).brief()}


# ---------------------------------------------------------------- overnight-rollout
@flow(name=names.OVERNIGHT_ROLLOUT, flow_run_name=_overnight_run_name)
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
    lease_wait_s = current().settings.lease_wait_s
    numbers = [w["wave_id"] for w in waves]
    label_run(numbers, "wave-" + "+".join(map(str, numbers)) + "-overnight-rollout")
    pacing = Pacing(
        batches_per_step=batches_per_step,
        batch_size=batch_size,
        margin_minutes=margin_minutes,
        max_pause_seconds=max_pause_seconds,
    )
    results = []
    for w in waves:
        wave_id = w["wave_id"]
        # A wave still being run (e.g. its weekly run) is waited for, up to its deadline.
        wait_s = max(lease_wait_s, (w["rollout_deadline"] - utcnow()).total_seconds())
        # The wave's own rollout stage, paced; then its SMS; then it closes if done.
        summary = _finished(
            run_wave(
                current(),
                wave_id,
                run_flow=_run_flow,
                stages=[Stage.ROLLOUT, Stage.ANNOUNCE],
                keep_open=w["keep_open"],
                pacing=pacing,
                wait_s=wait_s,
                reraise=True,
                logger=_logger(),
            )
        )
        rollout = summary.stages[Stage.ROLLOUT.value]
        results.append({**summary.brief(), "rollout": rollout.counts, **(rollout.pacing or {})})
    return {"waves": results}


# ---------------------------------------------------------------- rerun-wave, raise-quota
@flow(name=names.RERUN_WAVE, flow_run_name=_rerun_run_name)
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
    audit_task(
        "wave.rerun",
        wave_id,
        {"stages": [s.value for s in stages or []] or "all", "flow_run": current_run.name},
    )
    outcome = run_wave(
        current(),
        wave_id,
        run_flow=_run_flow,
        stages=list(stages) if stages else None,
        draw_without_pending=draw_without_pending,
        wait_s=_lease_wait_s(),
        sign_off=lambda w, s: s.waits_for_sign_off and await_sign_off(w).approved,
        reraise=True,
        logger=_logger(),
    )
    return _finished(outcome).brief()


@flow(name=names.RAISE_QUOTA, flow_run_name=_raise_quota_run_name)
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
    actor = actor_here()

    raised: list[dict] = []

    def raise_now(_sessions, wave_id_: int, quota_: int, *, lease_owner: str, actor) -> dict:
        # Under the lease, as a task of this run (its own state in the UI).
        raised.append(raise_quota_task(wave_id_, quota_, lease_owner, actor.who, actor.host))
        return raised[-1]

    outcome = raise_quota(
        current(),
        wave_id,
        quota,
        run_flow=_run_flow,
        by=actor.who,
        via="prefect",
        wait_s=_lease_wait_s(),
        sign_off=lambda w, s: s.waits_for_sign_off and await_sign_off(w).approved,
        raise_now=raise_now,
        logger=_logger(),
    )
    summary = _finished(outcome)
    return {"quota": raised[0] if raised else None, **summary.brief()}


# ---------------------------------------------------------------- daily-payouts
class PayoutSignOffForm(RunInput):
    """The form of a payout run paused for sign-off: what it is about to pay, then the
    approver's name and an explicit approval of exactly that list (its digest)."""

    approver: str = Field(description="Your name, as the audit trail will show it.")
    approve: bool = Field(default=False, description="I approve these payments as shown.")
    signature: str = Field(
        default="", description=SIGNATURE_HELP.format(kind="payout", ident="<the as-of date>")
    )
    as_of: str = Field(description="The payout run's date.")
    payments: int = Field(description="Payments to make.")
    total_rupiah: int = Field(description="Their total, in rupiah.")
    digest: str = Field(description="SHA-256 of the (NIK, benefit, installment, amount) list.")


def _payout_form(status: dict) -> type[PayoutSignOffForm]:
    lines = "\n".join(
        f"- {b}: **{v['count']}** payments, **{rupiah(v['amount'])}**"
        for b, v in status["by_benefit"].items()
    )
    return PayoutSignOffForm.with_initial_data(
        description=(
            f"## Payout run {status['as_of']} waits for sign-off\n\n{lines}\n"
            f"- digest: `{status['digest']}`\n\nApprovals: {len(status['approvals'])} of "
            f"{status['required']}. Type your name and tick *approve*; each approver must be "
            "a different person.\n\n"
            + _signing_note("payout", status["as_of"], status["digest"], status["signed"])
        ),
        approver="",
        approve=False,
        signature="",
        as_of=status["as_of"],
        payments=status["payments"],
        total_rupiah=status["total_amount"],
        digest=status["digest"],
    )


def _daily_run_name() -> str:
    return f"{names.DAILY_PAYOUTS}-{datetime.now(JAKARTA).date().isoformat()}"


def await_payout_sign_off(as_of) -> dict:
    """Pauses with the form until enough different people approved the run's list as it
    stands (each approval recorded as `prakerja payout sign-off` records it)."""
    from tasks.audit import Actor
    from tasks.payout_signoff import record_approval, status
    from tasks.signoff import SignOffError

    logger = get_run_logger()
    app = current()
    sessions = app.sessions
    now = status(sessions, as_of, approvers=app.approvers)
    while not now["approved"]:
        try:
            answer = pause_flow_run(
                wait_for_input=_payout_form(now), timeout=int(current().settings.sign_off_wait_s)
            )
        except FlowPauseTimeout:
            logger.warning("payout run %s: no sign-off through the form in time", as_of)
            break
        if answer.approve:
            try:
                record_approval(
                    sessions,
                    as_of,
                    Actor(answer.approver.strip(), Actor.here().host),
                    via="prefect",
                    seen_digest=answer.digest,
                    approvers=app.approvers,
                    signature=answer.signature.strip() or None,
                )
            except SignOffError as exc:
                logger.warning("payout run %s: approval refused: %s", as_of, exc)
        else:
            logger.warning("payout run %s: the form was sent without 'approve'", as_of)
        now = status(sessions, as_of, approvers=app.approvers)
    return now


@flow(name=names.DAILY_PAYOUTS, flow_run_name=_daily_run_name)
def daily_payouts(
    sign_off: Annotated[int, Field(ge=0, le=2)] = 0,
) -> dict:
    """Today's payout run (Asia/Jakarta): platform feeds, revocations, incentives and
    survey payments due, each re-checked, disbursed and reconciled; pauses with a form
    for sign-off when the run requires it, then pays.

    Args:
        sign_off: Approvers needed before any payment of today's run (0: none).
    """
    from flows.payout import run_payout_flow
    from rules.settings import jakarta_today
    from tasks.audit import Actor

    install_masking()
    as_of = jakarta_today()
    app = current()

    def start():
        return start_payout_run(
            app,
            as_of,
            run_flow=run_payout_flow,
            sign_off=sign_off or None,
            actor=Actor.deployment(),
            via="prefect",
            wait_s=_lease_wait_s(),
        )

    outcome = start()
    if outcome.end == RunEnd.SIGN_OFF and await_payout_sign_off(as_of)["approved"]:
        outcome = start()  # approved: the same date again (a rerun pays the approved list)
    if outcome.end in (RunEnd.FAILED, RunEnd.BUSY, RunEnd.REFUSED):
        raise RuntimeError(outcome.message or f"payout run {as_of}: {outcome.end.value}")
    return {"as_of": as_of.isoformat(), "end": outcome.end.value, "run": outcome.run_name}
