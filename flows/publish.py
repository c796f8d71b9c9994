"""What stages tell operators: merged counts in the run log, artifacts and wave events."""

from __future__ import annotations

from typing import cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from models import names
from models.enums import ReasonCode, Stage
from readmodels.report_types import merge_reports
from readmodels.summaries import SignOffStatus
from rules.funnel import funnel_rows, selected_parts
from rules.money import rupiah
from runtime import progress
from runtime.log_masking import SHOWN_BY_STAGE_LINE
from tasks.batches import stage_state_task  # the wave's state, from the database


def stage_artifact_key(wave_id: int, stage: Stage) -> str:
    """`wave-<N>-stage-<stage>`: apart from the draw facts (`wave-<N>-draw`) and the
    progress artifacts (`wave-<N>-<stage>-progress`): one key per meaning."""
    return f"wave-{wave_id}-stage-{stage.value}"


def _as_counts(report: dict) -> dict:
    """A stage task's report as merge_reports reads it: intake, local eligibility and the
    draw return their counts at the top level, not under `counts`."""
    if "counts" in report:
        return report
    counts = {k: v for k, v in report.items() if isinstance(v, int) and not isinstance(v, bool)}
    return {"counts": counts, "failures": []}


def stage_markdown(wave_id: int, stage: Stage, merged: dict, wave_state: dict) -> str:
    """The stage artifact: the wave's state at this stage (from the database, so a rerun
    with nothing to do shows the last state, never an empty table), then what this run
    did and the partner failures it left pending."""
    from readmodels.reporting import stage_view

    md = f"## Wave {wave_id}: {stage.value}\n\n### The wave at this stage\n\n"
    md += "| | count |\n|---|--:|\n"
    md += "\n".join(
        f"| {r['wave state']} | {_count(r['count'])} |" for r in stage_view(wave_state, stage)
    )
    done = {k: v for k, v in sorted(merged["counts"].items()) if v}
    md += "\n\n### This run\n\n"
    if done:
        md += "| result | count |\n|---|--:|\n"
        md += "\n".join(f"| {k} | {_count(v)} |" for k, v in done.items())
    else:
        md += "Nothing to do for this stage in this run."
    fails = [
        f"| {f['partner']} | {f['error_class']} | {_count(f['items'])} |"
        for f in merged["failures"]
    ]
    if fails:
        md += (
            "\n\n### Pending after partner failures\n\n| partner | error | items |\n|---|---|--:|\n"
        )
        md += "\n".join(fails)
    return md


def publish_stage(wave_id: int, stage: Stage, reports: list[dict]) -> dict:
    merged = merge_reports(stage.value, [_as_counts(r) for r in reports])
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
    create_markdown_artifact(
        key=stage_artifact_key(wave_id, stage),
        markdown=stage_markdown(wave_id, stage, merged, stage_state_task(wave_id)),
        description=f"wave {wave_id} {stage.value} stage: the wave's state there, this run",
    )
    publish_credit_rejections(wave_id, stage, merged["counts"])
    return merged


def publish_credit_rejections(wave_id: int, stage: Stage, counts: dict) -> None:
    """`prakerja.credit.rejected` (operations.md): the issuer refused credits in this run of
    the stage; a person must look at them. Counts only: who they are is in `wave export`."""
    rejected = counts.get(ReasonCode.CREDIT_REJECTED.value, 0)
    if not rejected:
        return
    get_run_logger().warning(
        "wave %s %s: the card issuer refused %d credits",
        wave_id,
        stage.value,
        rejected,
        # in the UI's log; the terminal has it in the rollout's stage line (-v: here too)
        extra={SHOWN_BY_STAGE_LINE: True},
    )
    emit_event(
        event=names.CREDIT_REJECTED,
        resource={"prefect.resource.id": names.wave_resource(wave_id)},
        payload={
            "wave_id": wave_id,
            "stage": stage.value,
            "rejected": rejected,
            "credited": counts.get("credited", 0),
        },
    )


def _count(n: object) -> str:
    """`100,000`: a count as people read it (an artifact is read, not parsed: the numbers
    are in `wave report --json` and the wave events)."""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)


def _pct(share: object) -> str:
    return f"{share} %" if share != "" else ""


def funnel_table(funnel: dict[str, int], selected: dict[str, int] | None = None) -> list[dict]:
    """The rows of the funnel artifact: readable headers, `100,000` and `72.9 %`, and
    under `selected` how it adds up (in the draw, backfilled) when not all were drawn."""
    rows = []
    for row in funnel_rows(funnel):
        rows.append(
            {
                "step": row["step"],
                "count": _count(row["count"]),
                "share of registered": _pct(row["share_pct"]),
                "wave 1 of 2020": _count(row["reference"]),
                "2020 share": _pct(row["reference_share_pct"]),
            }
        )
        if row["step"] == "selected":
            for label, n in selected_parts(funnel.get("selected", 0), selected):
                rows.append(
                    {
                        "step": f"selected: {label}",
                        "count": _count(n),
                        "share of registered": "",
                        "wave 1 of 2020": "",
                        "2020 share": "",
                    }
                )
    return rows


def publish_wave(wave_id: int, report: dict) -> dict:
    create_table_artifact(
        key=f"wave-{wave_id}-funnel",
        table=funnel_table(report["funnel"], (report.get("draw") or {}).get("selected")),
        description=f"wave {wave_id} funnel beside wave 1 of 2020",
    )
    create_table_artifact(
        key=f"wave-{wave_id}-reasons",
        table=[{"reason": k, "count": _count(v)} for k, v in report["reasons"].items()]
        or [{"reason": "-", "count": "0"}],
        description=f"wave {wave_id} rejections and non-selections by reason",
    )
    create_table_artifact(
        key=f"wave-{wave_id}-pending",
        table=[
            {"waiting (stage:partner)": k, "count": _count(v)}
            for k, v in report["pending_by_partner"].items()
        ]
        or [{"waiting (stage:partner)": "-", "count": "0"}],
        description=f"wave {wave_id} pending registrants by stage and partner",
    )
    pending = report["outcomes"].get("PENDING", 0)
    emit_event(
        event=names.WAVE_PENDING if pending else names.WAVE_COMPLETED,
        resource={"prefect.resource.id": names.wave_resource(wave_id)},
        payload={
            "wave_id": wave_id,
            "pending": report["pending"],
            "funnel": report["funnel"],
            "credited_amount": report["credited_amount"],
            # from the ledger: refused credits are not waiting (readmodels/reporting.py)
            "waiting_for_credit": report["waiting_for_credit"],
        },
    )
    return report


def publish_awaiting_sign_off(wave_id: int, status: SignOffStatus) -> SignOffStatus:
    """The wave waits for sign-off (wave-rules.md): an artifact `wave-<N>-sign-off` with
    what approvers approve, and, when it really waits (its accounts are done), the event
    `prakerja.wave.awaiting-sign-off` that the automation turns into a notification."""
    if not status.waiting:
        return status
    rows = [
        ("seats", status.seats),
        ("confirmed participants", status.confirmed),
        ("total amount", rupiah(status.total_amount)),
        ("draw digest", f"`{status.digest}`"),
        ("approvals", f"{len(status.approvals)} of {status.required} ({status.approvers})"),
    ]
    md = f"## Wave {wave_id}: waiting for sign-off\n\n| | |\n|---|---|\n"
    md += "\n".join(f"| {k} | {v} |" for k, v in rows)
    md += (
        f"\n\nNo credit is sent until {status.required} different people approved: "
        f"`prakerja wave sign-off --wave {wave_id} --by NAME`, or the form of a paused run."
    )
    create_markdown_artifact(
        key=f"wave-{wave_id}-sign-off", markdown=md, description=f"wave {wave_id} sign-off"
    )
    get_run_logger().warning(
        "wave %s waits for sign-off: %d of %d approvals",
        wave_id,
        len(status.approvals),
        status.required,
    )
    emit_event(
        event="prakerja.wave.awaiting-sign-off",
        resource={"prefect.resource.id": f"prakerja.wave.{wave_id}"},
        payload={
            "wave_id": wave_id,
            "seats": status.seats,
            "confirmed": status.confirmed,
            "amount": status.total_amount,
            "required": status.required,
            "approvals": len(status.approvals),
            "digest": status.digest,
        },
    )
    return status


def publish_reconcile(wave_id: int, result: dict) -> dict:
    create_table_artifact(
        key=f"wave-{wave_id}-reconciliation",
        table=[{"check": k, "value": str(v)} for k, v in result.items()],
        description=f"wave {wave_id}: ledger against the card issuer's statement",
    )
    if not result["ok"]:
        emit_event(
            event=names.RECONCILE_MISMATCH,
            resource={"prefect.resource.id": names.wave_resource(wave_id)},
            payload={k: v for k, v in result.items() if k != "refused"},
        )
    return result


def publish_draw(wave_id: int, facts: dict) -> dict:
    """The draw artifact `wave-<N>-draw`: the seed's SHA-256 from the wave's creation on,
    then (a new version after the draw) the seed, the pool's size and digest, the seats."""
    drawn = facts["drawn"]
    rows = [
        ("lottery seed SHA-256", f"`{facts['lottery_seed_sha256']}`"),
        ("lottery seed", f"`{facts['lottery_seed']}`" if drawn else "published after the draw"),
        ("drawn at (UTC)", facts["drawn_at"] or "not yet"),
        ("pool size", facts["pool_size"] if drawn else "-"),
        ("pool digest", f"`{facts['pool_digest']}`" if drawn else "-"),
        ("quota", facts["quota"]),
        ("allocation", facts["allocation"]),
        ("drawn while some were pending", "yes" if facts["without_pending"] else "no"),
    ]
    md = f"## Wave {wave_id}: the draw\n\n| | |\n|---|---|\n"
    md += "\n".join(f"| {k} | {v} |" for k, v in rows)
    seats = facts.get("seats")
    if drawn and isinstance(seats, dict):
        pool = facts.get("pool_by_province") or {}
        md += "\n\n### Seats by province\n\n| province | pool | seats |\n|---|---|---|\n"
        md += "\n".join(f"| {p} | {pool.get(p, 0)} | {n} |" for p, n in sorted(seats.items()))
    elif drawn:
        md += f"\n\nSeats: {seats} (national)."
    create_markdown_artifact(
        key=f"wave-{wave_id}-draw",
        markdown=md,
        description=f"wave {wave_id} draw: seed commitment, pool and seats",
    )
    return facts


PROGRESS_EVERY_S = 2.0


def track_progress(wave_id: int, futures: list, stage: str | None = None) -> None:
    """A progress artifact `wave-<N>-<stage>-progress` that moves as batches finish.

    `stage` defaults to the running (stage) flow's name. Never fails the stage: a
    progress update the API refuses is only logged.
    """
    import time

    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.futures import as_completed
    from prefect.runtime import flow_run

    total = len(futures)
    if not total:
        return
    stage = stage or flow_run.flow_name or "stage"
    progress.batches_planned(wave_id, stage, total)  # the CLI's live line (runtime/progress.py)
    logger = get_run_logger()
    try:
        # Called from a sync flow, async_dispatch runs it synchronously: a UUID (its
        # declared type also admits the coroutine of the async path).
        artifact: UUID | None = cast(
            UUID,
            create_progress_artifact(
                0.0,
                key=f"wave-{wave_id}-{stage}-progress",
                description=f"wave {wave_id} {stage}: 0 of {total} batches done",
            ),
        )
    except Exception as exc:  # noqa: BLE001 - progress is a courtesy
        logger.warning("wave %s %s: no progress artifact (%s)", wave_id, stage, type(exc).__name__)
        artifact = None
    done, last = 0, time.monotonic()
    for future in as_completed(futures):
        done += 1
        if progress.active():
            progress.batch_done(wave_id, stage, _report_of(future))
        now = time.monotonic()
        if artifact is None or (done < total and now - last < PROGRESS_EVERY_S):
            continue
        last = now
        try:
            update_progress_artifact(
                artifact,
                100.0 * done / total,
                description=f"wave {wave_id} {stage}: {done} of {total} batches done",
            )
        except Exception as exc:  # noqa: BLE001
            logger.warning("wave %s %s: progress not updated (%s)", wave_id, stage, exc)


def _report_of(future) -> dict | None:
    """A finished batch's report (counts only), or None when it failed: the stage itself
    raises that failure when it collects its results."""
    try:
        report = future.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result that cannot be read is the stage's concern
        return None
    return report if isinstance(report, dict) else None
