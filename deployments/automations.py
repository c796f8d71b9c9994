"""`prakerja ops setup`: the notification block and the automations of operations.md.

Creates or updates, idempotently (a second run changes nothing and creates nothing):
- the notification block `custom-webhook/prakerja-alerts`, posting JSON
  `{"subject": ..., "body": ...}` to $PRAKERJA_ALERT_WEBHOOK_URL; or any existing
  notification block named instead (`slack-webhook/ops`, `email/...`, ...);
- one automation per alert below, named `prakerja: <alert>` and tagged `prakerja`.
  Automation names are not unique in Prefect: each is read by name first, updated when it
  differs, and extra copies (a setup interrupted half-way) are deleted.

Notifications are templated from the event's payload (wave, stage, partner, counts) or
from the flow run's name (`wave-<N>...`); they never carry a NIK, a name or a phone, and
never a state message (an exception's text may quote data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from models import names
from models.config import Settings, read_settings

WEBHOOK_ENV = "PRAKERJA_ALERT_WEBHOOK_URL"
BLOCK_NAME = "prakerja-alerts"
BLOCK_SLUG = "custom-webhook"
PREFIX = "prakerja: "
TAG = "prakerja"
# Flows whose failed or crashed runs are alerts: the wave, its stages (runs named
# wave-<N>-<stage>, so the alert names the stage) and the deployments' flows.
OPERATION_FLOWS = [
    names.WAVE_FLOW,
    *names.STAGE_FLOWS,
    *names.OPERATION_FLOWS,
    names.PAYOUT_FLOW,
]
# Flows that own a process (stages run inside the wave's): a silent one has died.
TOP_FLOWS = [names.WAVE_FLOW, *names.OPERATION_FLOWS]
_AS_OF = "{{ event.payload.as_of }}"
_PAYOUT = {"prefect.resource.id": "prakerja.payout.*"}
PARTNER_ALERT_WINDOW = timedelta(minutes=10)
# A run with no heartbeat for this long has died: 3+ missed heartbeats (Prefect sends one
# every 180 s by default, PREFECT_FLOWS_HEARTBEAT_FREQUENCY); keep it above that period.
SILENT_ENV = "PRAKERJA_SILENT_RUN_AFTER_S"
SILENT_RUN_AFTER_S = 600

_WAVE = "{{ event.payload.wave_id }}"


class SetupError(ValueError):
    """The notification target cannot be used; the message says what to give instead."""


@dataclass(frozen=True)
class Alert:
    name: str
    description: str
    expect: tuple[str, ...]
    subject: str
    body: str
    match: dict[str, Any]
    match_related: dict[str, Any] | None = None
    for_each: tuple[str, ...] = ()
    within: timedelta = timedelta(0)


PAYOUT_ALERTS: tuple[Alert, ...] = (
    Alert(
        "payout completed",
        "A payout run ended with nothing pending.",
        (names.PAYOUT_COMPLETED,),
        "[prakerja] payout run " + _AS_OF + " completed",
        "The payout run of " + _AS_OF + " ended with nothing pending. "
        "`prakerja payout report --as-of " + _AS_OF + "` shows what it paid.",
        _PAYOUT,
    ),
    Alert(
        "payout pending",
        "A payout run ended with payments or revocations pending after partner failures.",
        (names.PAYOUT_PENDING,),
        "[prakerja] payout run " + _AS_OF + " left payments pending",
        "The payout run of " + _AS_OF + " ended with {{ event.payload.pending }} payments or "
        "revocations waiting on a partner (none was paid without its re-check, none stopped "
        "for an outage). Run `prakerja payout run --as-of " + _AS_OF + "` again when the "
        "partners are back.",
        _PAYOUT,
    ),
    Alert(
        "payout awaiting sign-off",
        "A payout run waits for sign-off before any payment.",
        (names.PAYOUT_AWAITING_SIGN_OFF,),
        "[prakerja] payout run " + _AS_OF + " waits for sign-off",
        "The payout run of " + _AS_OF + " waits for sign-off: {{ event.payload.payments }} "
        "payments, Rp {{ event.payload.total_amount }}; {{ event.payload.required }} "
        "approvals needed. Approve in the paused run's form or with `prakerja payout "
        "sign-off --as-of " + _AS_OF + " --by NAME`.",
        _PAYOUT,
    ),
    Alert(
        "payout stopped",
        "A payout run's re-checks stopped payments of participants now listed.",
        (names.PAYOUT_STOPPED,),
        "[prakerja] payout run " + _AS_OF + ": payments stopped by re-checks",
        "The re-checks of the payout run of " + _AS_OF + " stopped participants: "
        "{% for k, v in event.payload.stopped.items() %}{{ k }} {{ v }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}. Nothing more is paid to them; "
        "what was paid before is in `prakerja payout report` (paid before exclusion).",
        _PAYOUT,
    ),
    Alert(
        "payout mismatch",
        "A payout run's payments and a payment partner's statement disagree.",
        (names.PAYOUT_MISMATCH,),
        "[prakerja] payout run " + _AS_OF + ": ledger and statement disagree",
        "Reconciliation of the payout run of " + _AS_OF + " found a mismatch with "
        "{% for k, v in event.payload.partners.items() %}{% if not v %}{{ k }} {% endif %}"
        "{% endfor %}. `prakerja payout reconcile --as-of " + _AS_OF + "` shows it again.",
        _PAYOUT,
    ),
)


ALERTS: tuple[Alert, ...] = (
    Alert(
        "partner failed",
        "A batch left registrants pending after a partner's retries ran out (or the partner "
        "refused us: needs a person). At most one notification per partner and wave every "
        "10 minutes; the wave's pending totals follow when its run ends.",
        (names.PARTNER_FAILED,),
        "[prakerja] wave " + _WAVE + ": partner {{ event.payload.partner }} failed in "
        "{{ event.payload.stage }}",
        "Partner {{ event.payload.partner }} failed ({{ event.payload.error_class }}) during "
        "the {{ event.payload.stage }} stage of wave " + _WAVE + ": "
        "{{ event.payload['items'] }} registrants in this batch are pending after its retries "
        "ran out.\n"
        "{% if event.payload.needs_person %}A person must look at it (credentials, a refused "
        "request or a credit conflict) before a rerun can help."
        "{% else %}Once the partner is back, run the deployment rerun-wave for wave "
        + _WAVE
        + " to pick them up.{% endif %}\n"
        "Further failures of {{ event.payload.partner }} in wave " + _WAVE + " within 10 "
        "minutes are not notified again.",
        {"prefect.resource.id": "prakerja.partner.*"},
        for_each=("prefect.resource.id", "related:wave:prefect.resource.id"),
        within=PARTNER_ALERT_WINDOW,
    ),
    Alert(
        "wave pending",
        "A wave's run ended with registrants pending after partner failures.",
        (names.WAVE_PENDING,),
        "[prakerja] wave " + _WAVE + " finished with pending registrants",
        "Wave " + _WAVE + " ended with registrants pending: "
        "{% for k, v in event.payload.pending.items() %}{{ k }} {{ v }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}.\n"
        "Funnel: registered {{ event.payload.funnel.registered }}, eligible "
        "{{ event.payload.funnel.eligible }}, selected {{ event.payload.funnel.selected }}, "
        "confirmed {{ event.payload.funnel.confirmed }}, credited "
        "{{ event.payload.funnel.credited }} (Rp {{ event.payload.credited_amount }}).\n"
        "Run the deployment rerun-wave for wave " + _WAVE + " when the partners are back.",
        {"prefect.resource.id": "prakerja.wave.*"},
    ),
    Alert(
        "wave completed",
        "A wave's run ended with nothing pending.",
        (names.WAVE_COMPLETED,),
        "[prakerja] wave " + _WAVE + " run completed",
        "Wave " + _WAVE + " ran with nothing pending. Funnel: registered "
        "{{ event.payload.funnel.registered }}, eligible {{ event.payload.funnel.eligible }}, "
        "selected {{ event.payload.funnel.selected }}, confirmed "
        "{{ event.payload.funnel.confirmed }}, credited {{ event.payload.funnel.credited }} "
        "(Rp {{ event.payload.credited_amount }})."
        "{% set waiting = event.payload.waiting_for_credit or 0 %}"
        "{% if waiting > 0 %} {{ waiting }} confirmed participants wait for their credit "
        "(the overnight-rollout deployment).{% endif %}",
        {"prefect.resource.id": "prakerja.wave.*"},
    ),
    Alert(
        "credit rejected",
        "The card issuer refused credits: those participants are REJECTED (CREDIT_REJECTED) "
        "and need a person.",
        (names.CREDIT_REJECTED,),
        "[prakerja] wave " + _WAVE + ": the card issuer refused "
        "{{ event.payload.rejected }} credits",
        "The card issuer refused {{ event.payload.rejected }} credits in the "
        "{{ event.payload.stage }} stage of wave " + _WAVE + " ({{ event.payload.credited }} "
        "applied in the same run). Those participants are REJECTED with reason "
        "CREDIT_REJECTED and get no money: a person must look at them with the issuer. "
        "`prakerja wave export --wave " + _WAVE + "` lists them (reason CREDIT_REJECTED).",
        {"prefect.resource.id": "prakerja.wave.*"},
    ),
    Alert(
        "awaiting sign-off",
        "A wave waits for sign-off before any credit (wave-rules.md, 'Sign-off before "
        "money'): nothing is credited until enough different people approved it.",
        ("prakerja.wave.awaiting-sign-off",),
        "[prakerja] wave " + _WAVE + " waits for sign-off",
        "Wave " + _WAVE + " waits for sign-off before any money moves: seats "
        "{{ event.payload.seats }}, {{ event.payload.confirmed }} confirmed participants, "
        "Rp {{ event.payload.amount }} in total, draw digest {{ event.payload.digest }}. "
        "{{ event.payload.approvals }} of {{ event.payload.required }} approvals so far.\n"
        "Approve in the form of the paused run in the Prefect UI, or with "
        "`prakerja wave sign-off --wave " + _WAVE + " --by NAME`; each approver must be a "
        "different person. A change to the confirmed list (a quota raise, a backfill) "
        "voids the approvals given so far.",
        {"prefect.resource.id": "prakerja.wave.*"},
    ),
    Alert(
        "rollout late",
        "The overnight rollout projects to finish after the wave's rollout deadline.",
        (names.ROLLOUT_LATE,),
        "[prakerja] wave " + _WAVE + ": rollout will miss its deadline",
        "The rollout of wave " + _WAVE + " projects to finish at "
        "{{ event.payload.projected_finish }} (UTC), {{ event.payload.minutes_late }} minutes "
        "after its deadline {{ event.payload.deadline }} (UTC): "
        "{{ event.payload.batches_left }} of {{ event.payload.batches_total }} credit batches "
        "left, {{ event.payload.confirmed }} participants were waiting at the start.",
        {"prefect.resource.id": "prakerja.wave.*"},
    ),
    Alert(
        "reconcile mismatch",
        "The ledger and the card issuer's statement disagree.",
        (names.RECONCILE_MISMATCH,),
        "[prakerja] wave " + _WAVE + ": ledger and issuer statement disagree",
        "Reconciliation of wave " + _WAVE + ": ledger {{ event.payload.ledger_count }} credits "
        "(Rp {{ event.payload.ledger_amount }}), statement {{ event.payload.statement_count }} "
        "(Rp {{ event.payload.statement_amount }}); missing in statement "
        "{{ event.payload.missing_in_statement }}, unknown in statement "
        "{{ event.payload.unknown_in_statement }}, amount mismatches "
        "{{ event.payload.amount_mismatches }}. `prakerja wave reconcile --wave " + _WAVE + "` "
        "shows it again.",
        {"prefect.resource.id": "prakerja.wave.*"},
    ),
    Alert(
        "export missing",
        "The weekly wave found no export in the drop folder: nothing ran.",
        (names.EXPORT_MISSING,),
        "[prakerja] wave " + _WAVE + ": no export, the weekly wave did not run",
        "The weekly wave found no {{ event.payload.expected_file }} in "
        "{{ event.payload.drop_dir }} ({{ event.payload.exports_seen }} exports there, all "
        "already run). Nothing ran. Drop the export with its wave-" + _WAVE + ".toml, then "
        "run the deployment weekly-wave (or wait for next week).",
        {"prefect.resource.id": "prakerja.wave.*"},
    ),
    Alert(
        "wave run failed",
        "A run of the wave flow or of a deployment's flow failed or crashed.",
        ("prefect.flow-run.Failed", "prefect.flow-run.Crashed"),
        "[prakerja] {{ event.resource['prefect.resource.name'] }} "
        "{{ event.resource['prefect.state-name'] | lower }}",
        # The run's own flow and deployment (related resources of the state event): a
        # refused quota raise is named as the raise-quota run it is, with its own advice.
        "{% set flows = event.related | selectattr('role', 'equalto', 'flow') "
        "| map(attribute='name') | list %}"
        "{% set deployments = event.related | selectattr('role', 'equalto', 'deployment') "
        "| map(attribute='name') | list %}"
        "{% set flow = flows | first if flows else 'unknown' %}"
        "The flow run {{ event.resource['prefect.resource.name'] }} (flow {{ flow }}"
        "{% if deployments %}, deployment {{ deployments | first }}{% endif %}) ended "
        "{{ event.resource['prefect.state-name'] }}. Its logs"
        "{% if flow != 'raise-quota' %}, stage artifacts and pending counts{% endif %} are in "
        "the Prefect UI (flow run id "
        "{{ event.resource.id | replace('prefect.flow-run.', '') }}). "
        "{% if flow == 'raise-quota' %}If the quota raise was refused (a closed wave, a "
        "quota below the current one, or a wave changed meanwhile), the quota did not change: "
        "run the deployment raise-quota again with the quota wanted once that is sorted out. "
        "If the run failed after raising it, run the deployment rerun-wave for this wave to "
        "process the new seats."
        "{% else %}Once the cause is fixed, run the deployment rerun-wave for this wave: "
        "every stage resumes only the work still to do.{% endif %}",
        {"prefect.resource.id": "prefect.flow-run.*"},
        {"prefect.resource.role": "flow", "prefect.resource.name": OPERATION_FLOWS},
    ),
)
# The dashboard's (portal.md, "Behind a proxy, and under attack"): the portal raises it
# at most once per 10 minutes across its processes, so every event notifies.
PORTAL_ALERTS: tuple[Alert, ...] = (
    Alert(
        "portal guessing",
        "Wrong sign-in codes on the dashboard, across all NIKs, went above "
        "PRAKERJA_PORTAL_GUESS_ALERT a minute: someone may be guessing codes.",
        (names.PORTAL_GUESSING,),
        "[prakerja] dashboard: {{ event.payload.failures_in_minute }} wrong sign-in codes "
        "in a minute",
        "The dashboard counted {{ event.payload.failures_in_minute }} wrong sign-in codes in "
        "the minute from {{ event.payload.minute_start }} (UTC), above the alert threshold "
        "of {{ event.payload.threshold }}. Every NIK stays limited (5 wrong codes in 15 "
        "minutes, 20 in 24 hours, then 429); the addresses sending them are in the "
        "proxy's logs. Not notified again for {{ event.payload.quiet_minutes }} minutes.",
        {"prefect.resource.id": names.PORTAL_RESOURCE},
    ),
)
# The payout runs' alerts (operations.md, "Alerts"), after the waves', then the dashboard's.
ALERTS = ALERTS + PAYOUT_ALERTS + PORTAL_ALERTS


def automation_name(alert: Alert) -> str:
    return PREFIX + alert.name


def _automations(block_id: UUID, silent_s: float = SILENT_RUN_AFTER_S) -> list:
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    out = []
    for a in ALERTS:
        out.append(
            AutomationCore(
                name=automation_name(a),
                description=a.description,
                enabled=True,
                tags=[TAG],
                trigger=EventTrigger(
                    expect=set(a.expect),
                    match=a.match,
                    match_related=a.match_related or {},
                    for_each=set(a.for_each),
                    posture=Posture.Reactive,
                    threshold=1,
                    within=a.within,
                ),
                actions=[
                    SendNotification(block_document_id=block_id, subject=a.subject, body=a.body)
                ],
            )
        )
    # A run whose process was killed sends no Failed state: after SILENT_ENV seconds (600)
    # without a heartbeat, mark it Crashed, which the "wave run failed" alert then reports.
    out.append(
        AutomationCore(
            name=PREFIX + "silent run crashed",
            description=f"A wave or operations run sent no heartbeat for {silent_s:.0f} s: "
            "its process died. Marks it Crashed (which notifies).",
            enabled=True,
            tags=[TAG],
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={
                    "prefect.flow-run.heartbeat",
                    "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed",
                },
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": TOP_FLOWS},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=silent_s),
            ),
            actions=[
                ChangeFlowRunState(
                    name="Crashed",
                    force=False,
                    state=StateType.CRASHED,
                    message=f"No heartbeat for {silent_s:.0f} s: the process running it died.",
                )
            ],
        )
    )
    return out


def ensure_webhook_block(url: str) -> tuple[UUID, str]:
    """The default block, created or brought up to date; returns (id, 'created'|...)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    if not url.startswith(("http://", "https://")):
        raise SetupError(f"{WEBHOOK_ENV}: {url!r} is not an http(s) URL")
    wanted: dict[str, Any] = {
        "name": BLOCK_NAME,
        "url": url,
        "method": "POST",
        "json_data": {"subject": "{{subject}}", "body": "{{body}}"},
        "headers": {"Content-Type": "application/json"},
        "timeout": 10.0,
    }
    current: Any
    try:
        current = CustomWebhookNotificationBlock.load(BLOCK_NAME)
    except ValueError:
        current = None
    if current is not None and all(getattr(current, k) == v for k, v in wanted.items()):
        return current._block_document_id, "unchanged"
    block = CustomWebhookNotificationBlock(**wanted)
    block_id: UUID = block.save(BLOCK_NAME, overwrite=True)  # type: ignore[assignment]
    return block_id, "created" if current is None else "updated"


def existing_block(ref: str) -> UUID:
    """An existing notification block named `<block-type-slug>/<name>`."""
    from prefect.blocks.core import Block

    if "/" not in ref:
        raise SetupError(
            f"--block {ref!r}: name it as <block-type-slug>/<name>, e.g. slack-webhook/ops"
        )
    block: Any
    try:
        block = Block.load(ref)
    except (ValueError, KeyError) as exc:
        raise SetupError(f"--block {ref!r}: no such block ({exc})") from None
    if "notify" not in block.get_block_capabilities():
        raise SetupError(f"--block {ref!r}: not a notification block")
    return block._block_document_id


def _comparable(automation) -> dict:
    data = automation.model_dump(mode="json", exclude={"id", "owner_resource"})
    data["trigger"].pop("id", None)
    for key in ("expect", "after", "for_each"):
        if isinstance(data["trigger"].get(key), list):
            data["trigger"][key] = sorted(data["trigger"][key])
    return data


def upsert_automations(block_id: UUID, silent_s: float = SILENT_RUN_AFTER_S) -> dict[str, str]:
    """name -> created / updated / unchanged (plus 'removed N duplicates')."""
    from prefect.client.orchestration import get_client

    results: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for wanted in _automations(block_id, silent_s):
            found = client.read_automations_by_name(wanted.name)
            if not found:
                client.create_automation(wanted)
                results[wanted.name] = "created"
                continue
            keep, *extra = sorted(found, key=lambda a: str(a.id))
            for dup in extra:
                client.delete_automation(dup.id)
            if _comparable(keep) == _comparable(wanted):
                state = "unchanged"
            else:
                client.update_automation(keep.id, wanted)
                state = "updated"
            results[wanted.name] = state + (f", removed {len(extra)} duplicates" if extra else "")
    return results


def setup(
    webhook_url: str | None = None, block: str | None = None, settings: Settings | None = None
) -> dict:
    """Creates or updates the notification target and every automation; idempotent.
    `settings` (default: the environment's) give the webhook and the silent-run delay."""
    settings = settings or read_settings()
    if block:
        block_id, block_state, target = existing_block(block), "existing", block
    else:
        env_url = settings.alert_webhook_url
        url = webhook_url or (env_url.get_secret_value() if env_url else None)
        if not url:
            raise SetupError(
                f"no alert target: set {WEBHOOK_ENV} (a webhook receiving JSON subject/body), "
                "pass --webhook-url, or name a notification block with --block"
            )
        block_id, block_state = ensure_webhook_block(url)
        target = f"{BLOCK_SLUG}/{BLOCK_NAME}"
    return {
        "block": {"name": target, "id": str(block_id), "state": block_state},
        "automations": upsert_automations(block_id, settings.silent_run_after_s),
    }
