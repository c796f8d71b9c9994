"""What stages tell operators: merged counts in the run log, artifacts and wave events."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from models.enums import Stage
from rules.funnel import funnel_rows
from tasks.report_types import merge_reports


def publish_stage(wave_id: int, stage: Stage, reports: list[dict]) -> dict:
    merged = merge_reports(stage.value, reports)
    logger = get_run_logger()
    logger.info("wave %s %s: %s", wave_id, stage.value, merged["counts"])
    for f in merged["failures"]:
        logger.warning(
            "wave %s %s: %d items pending after %s failed (%s)",
            wave_id,
            stage.value,
            f["items"],
            f["partner"],
            f["error_class"],
        )
    lines = [f"| {k} | {v} |" for k, v in sorted(merged["counts"].items())]
    fails = [f"| {f['partner']} | {f['error_class']} | {f['items']} |" for f in merged["failures"]]
    md = f"## Wave {wave_id}: {stage.value}\n\n| result | count |\n|---|---|\n" + "\n".join(lines)
    if fails:
        md += (
            "\n\n### Pending after partner failures\n\n| partner | error | items |\n|---|---|---|\n"
        )
        md += "\n".join(fails)
    create_markdown_artifact(
        key=f"wave-{wave_id}-{stage.value}",
        markdown=md,
        description=f"wave {wave_id} {stage.value} stage",
    )
    return merged


def publish_wave(wave_id: int, report: dict) -> dict:
    create_table_artifact(
        key=f"wave-{wave_id}-funnel",
        table=funnel_rows(report["funnel"]),
        description=f"wave {wave_id} funnel beside wave 1 of 2020",
    )
    create_table_artifact(
        key=f"wave-{wave_id}-reasons",
        table=[{"reason": k, "count": v} for k, v in report["reasons"].items()]
        or [{"reason": "-", "count": 0}],
        description=f"wave {wave_id} rejections and non-selections by reason",
    )
    create_table_artifact(
        key=f"wave-{wave_id}-pending",
        table=[{"waiting": k, "count": v} for k, v in report["pending_by_partner"].items()]
        or [{"waiting": "-", "count": 0}],
        description=f"wave {wave_id} pending registrants by stage and partner",
    )
    pending = report["outcomes"].get("PENDING", 0)
    emit_event(
        event="prakerja.wave.pending" if pending else "prakerja.wave.completed",
        resource={"prefect.resource.id": f"prakerja.wave.{wave_id}"},
        payload={
            "wave_id": wave_id,
            "pending": report["pending"],
            "funnel": report["funnel"],
            "credited_amount": report["credited_amount"],
        },
    )
    return report


def publish_reconcile(wave_id: int, result: dict) -> dict:
    create_table_artifact(
        key=f"wave-{wave_id}-reconciliation",
        table=[{"check": k, "value": str(v)} for k, v in result.items()],
        description=f"wave {wave_id}: ledger against the card issuer's statement",
    )
    if not result["ok"]:
        emit_event(
            event="prakerja.reconcile.mismatch",
            resource={"prefect.resource.id": f"prakerja.wave.{wave_id}"},
            payload={k: v for k, v in result.items() if k != "refused"},
        )
    return result
