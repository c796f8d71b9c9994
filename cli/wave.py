"""`prakerja wave ...` (and `explain`): run and inspect waves.

Each command parses its flags, calls the run service (services/runs.py) or a read model,
and maps what comes back to an exit code and a table: `wave run` goes from here to
`services.runs.start_wave_run`, which holds the lease and runs `flows/wave.py`'s flow.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from cli.root import (
    EXIT_BUSY,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REFUSED,
    EXIT_SIGN_OFF,
    _by_option,
    _load_partners,
    _prefect_api_url,
    _refuse,
    _runtime,
    _rupiah,
    log,
    main,
    settings,
    verbose,
)


@main.group()
def wave() -> None:
    """Run and inspect waves."""


def _settings_options(f):
    """One flag per wave setting but the wave number (--wave), derived from
    rules.settings.WaveSettings: name with dashes, its description as help, its bounds,
    choices and default. A flag left out is None: a resumed wave keeps its value."""
    from datetime import date
    from typing import Literal, get_args, get_origin

    from annotated_types import Ge, Le

    from rules.settings import WaveSettings

    for name, info in reversed(list(WaveSettings.model_fields.items())):
        if name == "wave_id":
            continue
        flag = "--" + name.replace("_", "-")
        help_text = info.description or ""
        if not info.is_required():
            default = info.default
            shown = ("on" if default else "off") if isinstance(default, bool) else default
            help_text += f" [default: {shown}]"
        kind = info.annotation
        if kind is bool:
            f = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)(f)
            continue
        if kind is date:
            ptype = click.DateTime(["%Y-%m-%d"])
        elif get_origin(kind) is Literal:
            ptype = click.Choice(list(get_args(kind)))
        elif kind is int:
            lo = next((m.ge for m in info.metadata if isinstance(m, Ge)), None)
            hi = next((m.le for m in info.metadata if isinstance(m, Le)), None)
            ptype = click.IntRange(lo, hi)
        else:
            ptype = click.STRING
        f = click.option(flag, name, type=ptype, default=None, help=help_text)(f)
    return f


@wave.command("run")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option(
    "--registrants",
    type=click.Path(dir_okay=False),
    default=None,
    help="The registrant export (required when the wave is created).",
)
@click.option("--keep-open", is_flag=True, help="Do not close the wave when done.")
@click.option(
    "--draw-without-pending",
    is_flag=True,
    help="Draw even if some registrants still wait on a partner (recorded).",
)
@click.option(
    "--task-runner",
    type=click.Choice(["threads", "dask"]),
    default="threads",
    show_default=True,
    help="Run batch tasks on threads here, or on a Dask cluster (use PostgreSQL then).",
)
@click.option("--dask-address", default=None, help="The Dask scheduler, e.g. tcp://host:8786.")
@click.option(
    "--shared-rate-limits/--no-shared-rate-limits",
    default=None,
    help="Hold partner max_rps across all workers with Prefect global rate limits "
    "(default: on with --task-runner dask).",
)
@_settings_options
@_by_option
def wave_run(
    wave_id,
    registrants,
    quota,
    lottery_seed,
    keep_open,
    draw_without_pending,
    task_runner,
    dask_address,
    shared_rate_limits,
    by,
    **flags,
) -> None:
    """Creates the wave (or resumes it), runs every stage still to do, and closes it."""
    if task_runner == "dask" and not dask_address:
        _refuse("--dask-address: required with --task-runner dask")
    if shared_rate_limits is None:
        shared_rate_limits = task_runner == "dask"
    # Travels with the run: the wave flow's parameter, carried by every batch task (a Dask
    # worker started elsewhere does what this run asked, whatever its own environment).
    execution = _execution(
        task_runner=task_runner,
        dask_address=dask_address,
        partner_limits="prefect" if shared_rate_limits else None,
    )
    sys.exit(
        run_wave_command(
            wave_id=wave_id,
            registrants=registrants,
            quota=quota,
            lottery_seed=lottery_seed,
            keep_open=keep_open,
            draw_without_pending=draw_without_pending,
            flags=flags,
            execution=execution,
            by=by,
        )
    )


def _execution(**overrides):
    """The run's Execution: these flags over the process's settings."""
    from pydantic import ValidationError

    try:
        return settings().execution(**overrides)
    except (ValueError, ValidationError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else None
        _refuse(errors[0]["msg"] if errors else str(exc))


# How a run's end (services/runs.py RunEnd) shows as the command's exit code.
EXIT_OF = {
    "done": EXIT_OK,
    "closed": EXIT_OK,  # a closed wave has no stage left: nothing to do, nothing pending
    "pending": EXIT_PENDING,
    "sign-off": EXIT_SIGN_OFF,
    "busy": EXIT_BUSY,
    "refused": EXIT_REFUSED,
    "failed": EXIT_ERROR,
}


def run_wave_command(
    *,
    wave_id: int,
    registrants: str | None,
    quota: int | None,
    lottery_seed: str | None,
    keep_open: bool,
    draw_without_pending: bool,
    flags: dict,
    partners_config=None,
    quiet: bool = False,
    execution=None,
    by: str | None = None,
) -> int:
    """`wave run`: the run service's start_wave_run with these flags, its outcome printed
    and mapped to the exit code (interfaces.md). `by` names who runs it in the audit trail
    (default: the login user)."""
    from services.runs import WaveRun, export_problem, start_wave_run

    problem = export_problem(registrants)  # before the database is opened
    if problem is not None:
        _refuse(problem)
    values = dict(flags)
    if values.get("reference_date") is not None:
        values["reference_date"] = values["reference_date"].date()
    values.update(quota=quota, lottery_seed=lottery_seed)
    if partners_config is None:
        partners_config = _load_partners()
    app = _runtime(partners_config, execution or _execution())
    request = WaveRun(
        wave_id,
        registrants=registrants,
        settings=values,
        keep_open=keep_open,
        draw_without_pending=draw_without_pending,
        by=by,
    )
    outcome = start_wave_run(
        app,
        request,
        run_flow=_flow_runner(wave_id),
        on_started=_say_started,
        on_lost=_exit_process,
    )
    return _report(outcome, quiet)


def _flow_runner(wave_id: int):
    """The wave flow as this command runs it: one progress line per stage on the
    terminal, after saying when Prefect's temporary server has to start first."""

    def run(wave_id_: int, **options):
        from cli.stage_lines import StageLines
        from flows.wave import run_wave_flow

        if not _prefect_api_url():
            click.echo(
                f"wave {wave_id}: starting Prefect's temporary local server "
                "(PREFECT_API_URL is not set; about 10 s)",
                err=True,
            )
        with StageLines(wave_id_, live=False if verbose() else None):
            return run_wave_flow(wave_id_, **options)

    return run


def _say_started(wave_row, created: bool) -> None:
    click.echo(
        f"wave {wave_row.wave_id}: {'created' if created else 'resumed'}; lottery seed sha256 "
        f"{wave_row.lottery_seed_sha256}",
        err=True,
    )


def _exit_process(held) -> None:
    # Losing the lease ends this process at once (exit 1): services/lease.py.
    from services.lease import exit_process

    exit_process(held)


def _report(outcome, quiet: bool) -> int:
    """The outcome on the terminal: the refusal or failure in one line, else the run's
    funnel and what is left to do; then its exit code."""
    from services.runs import RunEnd

    wave_id, summary = outcome.wave_id, outcome.summary
    if outcome.end in (RunEnd.REFUSED, RunEnd.BUSY, RunEnd.FAILED):
        click.echo(f"error: {outcome.message}", err=True)
        return EXIT_OF[outcome.end.value]
    if outcome.end == RunEnd.CLOSED and summary is None:
        click.echo(outcome.message, err=True)
        return EXIT_OK
    assert summary is not None
    if not quiet:
        name = summary.flow_run_name or f"wave-{wave_id}"
        click.echo(f"wave {wave_id}: Prefect flow run {name} ({summary.flow_run_id})", err=True)
        _print_funnel(summary.report)
    if outcome.end == RunEnd.SIGN_OFF:
        s = summary.sign_off
        assert s is not None
        click.echo(
            f"wave {wave_id}: waits for sign-off before any credit: "
            f"{len(s.approvals)} of {s.required} approvals of "
            f"{s.confirmed:,} confirmed participants, "
            f"{_rupiah(s.total_amount)} "
            f"({'signed' if s.signed else 'unsigned: no approvers file'}); approve with "
            f"`prakerja wave sign-off --wave {wave_id} --by NAME --digest {s.digest}"
            f"{' --key YOUR_KEY' if s.signed else ''}`, then run it again",
            err=True,
        )
    elif outcome.end == RunEnd.PENDING:
        waiting = ", ".join(f"{k} {v:,}" for k, v in summary.pending_by_stage.items())
        click.echo(
            f"wave {wave_id}: {summary.pending:,} registrants pending"
            f"{f' ({waiting})' if waiting else ''}; rerun to pick them up",
            err=True,
        )
    return EXIT_OF[outcome.end.value]


def _print_funnel(report: dict) -> None:
    from cli import render

    render.funnel(report)


@wave.command("raise-quota")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--quota", type=click.IntRange(1), required=True)
@_by_option
def wave_raise_quota(wave_id: int, quota: int, by: str | None) -> None:
    """Raises an open wave's quota; the new seats are drawn and processed."""
    from services.runs import raise_quota

    app = _runtime(_load_partners(), _execution())

    def raised(old: int, new: int) -> None:
        click.echo(f"wave {wave_id}: quota {old:,} -> {new:,}", err=True)

    outcome = raise_quota(
        app,
        wave_id,
        quota,
        run_flow=_flow_runner(wave_id),
        by=by,
        on_lost=_exit_process,
        on_raised=raised,
        on_started=_say_started,
    )
    sys.exit(_report(outcome, quiet=False))


@wave.command("announce")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option(
    "--message",
    default=None,
    help="Plain text shown to the wave's registrants on the dashboard (at most 1,000 "
    "characters); a new announcement replaces it.",
)
@click.option("--json", "as_json", is_flag=True)
@_by_option
def wave_announce(wave_id: int, message: str | None, as_json: bool, by: str | None) -> None:
    """Publishes the wave's results on the registrant dashboard (portal.md)."""
    from tasks.audit import Actor
    from tasks.portal_index import AnnounceError, announce_wave

    rt = _runtime()
    started = time.monotonic()
    try:
        result = announce_wave(rt.sessions, wave_id, message, actor=Actor.here(by))
    except AnnounceError as exc:
        _refuse(str(exc))
    result["seconds"] = round(time.monotonic() - started, 3)
    result["announced_at"] = result["announced_at"].isoformat() + "Z"
    if as_json:
        click.echo(json.dumps(result))
        return
    built = (
        f"; dashboard index built now ({result['indexed']:,} NIKs)"
        if result["index_built_now"]
        else ""
    )
    again = "" if result["first_announcement"] else " (message replaced; first publication kept)"
    click.echo(
        f"wave {wave_id}: results published on the dashboard at {result['announced_at']}"
        f"{again}{built}"
    )


@wave.command("report")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--json", "as_json", is_flag=True)
def wave_report_cmd(wave_id: int, as_json: bool) -> None:
    """The funnel, outcomes, reasons, pending and money."""
    from readmodels.reporting import wave_report

    rt = _runtime()
    with rt.sessions() as session:
        try:
            report = wave_report(session, wave_id)
        except LookupError as exc:
            _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(report, default=str))
        return
    from cli import render

    render.wave_report(report)


@wave.command("export")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def wave_export(wave_id: int, out: str) -> None:
    """Every data row's outcome: line,registration_id,nik,outcome,reason."""
    from readmodels.reporting import export_outcomes

    folder = Path(out).resolve().parent
    if not folder.is_dir():  # before the database is opened: nothing is read or written
        _refuse(f"--out {out}: no such folder: {folder}")
    rt = _runtime()
    try:
        n = export_outcomes(rt.sessions, wave_id, out)
    except LookupError as exc:
        _refuse(str(exc))
    except OSError as exc:  # a folder it may not write to, a full disk
        log.debug("export failed", exc_info=True)
        _refuse(f"--out {out}: cannot be written: {exc.strerror or type(exc).__name__}")
    click.echo(f"wrote {n:,} rows to {out}", err=True)


@wave.command("reconcile")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--json", "as_json", is_flag=True)
def wave_reconcile(wave_id: int, as_json: bool) -> None:
    """The ledger against the card issuer's statement."""
    from readmodels.reporting import reconcile

    rt = _runtime(_load_partners())
    try:
        result = reconcile(rt.sessions, rt.partners.issuer, wave_id)
    except LookupError as exc:
        _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(result))
    else:
        from cli import render

        render.reconcile(result)
    sys.exit(EXIT_OK if result["ok"] else EXIT_ERROR)


@main.command()
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--nik", required=True)
@click.option("--json", "as_json", is_flag=True)
def explain(wave_id: int, nik: str, as_json: bool) -> None:
    """One registrant's path: every check, its answer, when, and the final reason."""
    from readmodels.reporting import explain as explain_one

    rt = _runtime()
    with rt.sessions() as session:
        try:
            result = explain_one(session, wave_id, nik)
        except LookupError as exc:
            _refuse(str(exc))
    if result is None:
        click.echo(f"error: no registrant with that NIK in wave {wave_id}", err=True)
        sys.exit(EXIT_ERROR)
    from readmodels.payouts import lifecycle_of, participant_ids

    # After the balance (lifecycle.md): the participant's state, events used, payments.
    lifecycle = lifecycle_of(rt.sessions, participant_ids(rt.sessions, wave_id, nik))
    result["lifecycle"] = lifecycle[0] if lifecycle else None
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    from cli import render

    render.explain(result)
    if lifecycle:
        render.lifecycle(lifecycle[0])


@wave.command("sign-off")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--by", "by", default=None, help="The approver's name (without it: show only).")
@click.option("--digest", "digest", default=None, help="The digest you were shown (with --by).")
@click.option(
    "--key",
    "key_file",
    default=None,
    help="Your OpenSSH ed25519 private key (with --by, under an approvers file).",
)
@click.option("--json", "as_json", is_flag=True)
def wave_sign_off(
    wave_id: int, by: str | None, digest: str | None, key_file: str | None, as_json: bool
) -> None:
    """Shows the wave as it stands (seats, confirmed participants, total rupiah, digest),
    or (with --by and the --digest shown) records one approval of it, signed with --key
    under an approvers file."""
    from cli.approve import approval_flags_or_refuse, approvers_or_refuse, signature_for
    from readmodels.signoff import sign_off_status
    from tasks.audit import Actor
    from tasks.signoff import SignOffError, record_approval

    digest = approval_flags_or_refuse(by, digest, key_file, "wave")
    approvers = approvers_or_refuse()
    rt = _runtime()
    if by is None or digest is None:
        with rt.sessions() as session:
            try:
                shown = sign_off_status(session, wave_id, approvers=approvers)
            except LookupError as exc:
                _refuse(str(exc))
        _show_sign_off(shown, as_json)
        return
    signature = signature_for(approvers, key_file, by, "wave", wave_id, digest)
    try:
        result = record_approval(
            rt.sessions,
            wave_id,
            Actor.here(by),
            via="cli",
            seen_digest=digest,
            approvers=approvers,
            signature=signature,
        )
    except (LookupError, SignOffError) as exc:
        _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(_sign_off_json(result), default=str))
        return
    seen = result["approved_now"]
    click.echo(f"wave {wave_id} approved by {seen['by']} at {seen['at']}:")
    _print_seen(seen)
    click.echo(
        f"  signed with             {seen['key']}"
        if seen["signed"]
        else "  signed with             nothing: unsigned (no approvers file)"
    )
    n, need = len(result["approvals"]), result["required"]
    who = ", ".join(a["by"] for a in result["approvals"])
    if result["approved"]:
        click.echo(f"{n} of {need} approvals ({who}): the next run credits the wave.")
    else:
        click.echo(f"{n} of {need} approvals ({who}): waiting for {need - n} more.")


def _sign_off_json(status: dict) -> dict:
    """interfaces.md's keys (wave, seats, confirmed, amount, digest, required, approvals)
    besides the status's own."""
    return {
        **status,
        "wave": status["wave_id"],
        "amount": status.get("total_amount", 0),
    }


def _print_seen(seen: dict) -> None:
    seats = seen["seats"]
    if isinstance(seats, dict):
        seats = ", ".join(f"{p}: {n:,}" for p, n in sorted(seats.items()))
    else:
        seats = f"{seats:,}"
    click.echo(f"  seats                   {seats}")
    click.echo(f"  confirmed participants  {seen['confirmed']:,}")
    click.echo(f"  total amount            {_rupiah(seen['total_amount'])}")
    click.echo(f"  draw digest             {seen['digest']}")


def _show_sign_off(status: dict, as_json: bool) -> None:
    from cli.approve import signing_line

    if as_json:
        click.echo(json.dumps(_sign_off_json(status), default=str))
        return
    wave_id = status["wave_id"]
    if not status["required"]:
        click.echo(f"wave {wave_id} needs no sign-off (its sign_off is 0)")
        return
    click.echo(f"wave {wave_id} as it stands:")
    _print_seen(status)
    who = ", ".join(a["by"] for a in status["approvals"]) or "none"
    click.echo(
        f"{len(status['approvals'])} of {status['required']} approvals ({who}); "
        + signing_line(status["signed"])
    )
    if status["waiting"]:
        key = " --key YOUR_KEY" if status["signed"] else ""
        click.echo(
            f"approve: prakerja wave sign-off --wave {wave_id} --by NAME "
            f"--digest {status['digest']}{key}"
        )
    elif status["not_waiting"]:
        click.echo(f"not waiting for sign-off: {status['not_waiting']}")
