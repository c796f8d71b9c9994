"""`prakerja payout run | sign-off | report | reconcile` (interfaces.md; lifecycle.md,
"Payout runs"): the run service's outcome mapped to the exit codes of `wave run`."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime

import click

from cli.root import (
    _by_option,
    _load_partners,
    _prefect_api_url,
    _refuse,
    _runtime,
    _rupiah,
    main,
)
from cli.wave import EXIT_OF


@main.group()
def payout() -> None:
    """After the balance: training feeds, revocations, incentives and survey payments."""


def _as_of(value: str | None) -> date:
    from rules.settings import jakarta_today

    if value is None:
        return jakarta_today()
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        _refuse(f"--as-of: not a date (YYYY-MM-DD): {value!r}")


_told_ephemeral = False


def _run_flow(as_of: date, run_name: str) -> dict:
    from flows.payout import run_payout_flow

    global _told_ephemeral
    if not _prefect_api_url() and not _told_ephemeral:
        _told_ephemeral = True
        click.echo(
            f"{run_name}: starting Prefect's temporary local server "
            "(PREFECT_API_URL is not set; about 10 s)",
            err=True,
        )
    return run_payout_flow(as_of, run_name)


def _exit_process(held) -> None:
    from services.lease import exit_process

    exit_process(held)


@payout.command("run")
@click.option("--as-of", "as_of", default=None, help="YYYY-MM-DD (default: today, Asia/Jakarta).")
@click.option(
    "--sign-off",
    "sign_off",
    type=click.IntRange(0, 2),
    default=None,
    help="Approvers needed before any payment of this run (default: the run's, else 0).",
)
@click.option("--json", "as_json", is_flag=True)
@_by_option
def payout_run(as_of: str | None, sign_off: int | None, as_json: bool, by: str | None) -> None:
    """The payout run for a date: feeds, revocations, what falls due, re-checks,
    disbursements, reconciliation."""
    sys.exit(run_payout_command(_as_of(as_of), sign_off=sign_off, as_json=as_json, by=by))


def run_payout_command(
    as_of: date,
    *,
    sign_off: int | None = None,
    as_json: bool = False,
    by: str | None = None,
    quiet: bool = False,
    partners_config=None,
) -> int:
    from services.payouts import start_payout_run
    from services.runs import RunEnd

    app = _runtime(partners_config or _load_partners())
    outcome = start_payout_run(
        app, as_of, run_flow=_run_flow, sign_off=sign_off, by=by, on_lost=_exit_process
    )
    code = EXIT_OF[outcome.end.value]
    if as_json:
        from readmodels.payouts import payout_report

        click.echo(
            json.dumps(
                {
                    "as_of": as_of.isoformat(),
                    "end": outcome.end.value,
                    "exit_code": code,
                    "run": outcome.run_name,
                    "message": outcome.message,
                    "stages": (outcome.result or {}).get("stages"),
                    "report": payout_report(app.sessions, as_of),
                },
                default=str,
            )
        )
        return code
    if outcome.message:
        click.echo(
            f"error: {outcome.message}"
            if outcome.end in (RunEnd.FAILED, RunEnd.REFUSED)
            else outcome.message,
            err=True,
        )
    if outcome.result and not quiet:
        for name, stage in outcome.result["stages"].items():
            counts = ", ".join(
                f"{k} {v:,}"
                for k, v in sorted(stage.get("counts", {}).items())
                if isinstance(v, int)
            )
            failures = stage.get("failures") or {}
            line = f"  {name:<16} {stage.get('seconds', 0):>7.1f} s  {counts or '-'}"
            if failures:
                line += f"  (partners failing: {', '.join(sorted(failures))})"
            click.echo(line)
    if outcome.end == RunEnd.SIGN_OFF:
        from cli.approve import approvers_or_refuse
        from tasks.payout_signoff import status

        s = status(app.sessions, as_of, approvers=approvers_or_refuse())
        key = " --key YOUR_KEY" if s["signed"] else ""
        click.echo(
            f"payout run {as_of}: waiting for sign-off: {s['payments']:,} payments, "
            f"{_rupiah(s['total_amount'])}, digest {s['digest']}; {len(s['approvals'])} of "
            f"{s['required']} approvals ({'signed' if s['signed'] else 'unsigned'}; "
            f"prakerja payout sign-off --as-of {as_of} --by NAME --digest {s['digest']}{key})",
            err=True,
        )
    elif outcome.end == RunEnd.PENDING:
        click.echo(
            f"payout run {as_of}: some payments or revocations wait on a partner; "
            "run it again later (nothing was paid without its check)",
            err=True,
        )
    elif outcome.end == RunEnd.DONE and not quiet:
        click.echo(f"payout run {as_of}: done ({outcome.run_name})", err=True)
    return code


@payout.command("sign-off")
@click.option("--as-of", "as_of", required=True, help="The run's date, YYYY-MM-DD.")
@click.option("--by", "by", default=None, help="The approver's name (without it: show only).")
@click.option("--digest", "digest", default=None, help="The digest you were shown (with --by).")
@click.option(
    "--key",
    "key_file",
    default=None,
    help="Your OpenSSH ed25519 private key (with --by, under an approvers file).",
)
@click.option("--json", "as_json", is_flag=True)
def payout_sign_off(
    as_of: str, by: str | None, digest: str | None, key_file: str | None, as_json: bool
) -> None:
    """Shows a payout run's payments as they stand and their digest, or (with --by and the
    --digest shown) records one approval of them, signed with --key under an approvers
    file."""
    from cli.approve import (
        approval_flags_or_refuse,
        approvers_or_refuse,
        signature_for,
        signing_line,
    )
    from tasks.audit import Actor
    from tasks.payout_signoff import record_approval, status
    from tasks.signoff import SignOffError

    day = _as_of(as_of)
    seen = approval_flags_or_refuse(by, digest, key_file, "run")
    approvers = approvers_or_refuse()
    if by is None or seen is None:
        result = status(_runtime().sessions, day, approvers=approvers)
    else:
        app = _runtime()
        signature = signature_for(approvers, key_file, by, "payout", day, seen)
        try:
            result = record_approval(
                app.sessions,
                day,
                Actor.here(by),
                via="cli",
                seen_digest=seen,
                approvers=approvers,
                signature=signature,
            )
        except SignOffError as exc:
            _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    click.echo(
        f"payout run {result['as_of']}: {result['payments']:,} payments, "
        f"{_rupiah(result['total_amount'])}"
    )
    for benefit, v in result["by_benefit"].items():
        click.echo(f"  {benefit:<10} {v['count']:>9,}  {_rupiah(v['amount'])}")
    click.echo(f"  digest     {result['digest']}")
    who = ", ".join(a["by"] for a in result["approvals"]) or "none"
    click.echo(
        f"{len(result['approvals'])} of {result['required']} approvals ({who}); "
        + signing_line(result["signed"])
    )


@payout.command("report")
@click.option("--as-of", "as_of", default=None, help="A run's date (default: the whole program).")
@click.option("--json", "as_json", is_flag=True)
def payout_report_cmd(as_of: str | None, as_json: bool) -> None:
    """Lifecycle states, revocations, payments by benefit and installment, money."""
    from readmodels.payouts import payout_report

    day = _as_of(as_of) if as_of else None
    report = payout_report(_runtime().sessions, day)
    if as_json:
        click.echo(json.dumps(report, default=str))
        return
    print_report(report)


def print_report(report: dict) -> None:
    """The lifecycle funnel (credited, bought, completed, each installment paid; revoked
    and stopped by reason) and the money by benefit."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = f"payout run {report['as_of']}" if report["as_of"] else "the whole program"
    funnel = Table(title=f"After the balance ({title})")
    funnel.add_column("step")
    funnel.add_column("count", justify="right")
    funnel.add_column("note")
    funnel.add_row("credited", f"{report['participants']:,}", "")
    funnel.add_row("bought a first training in time", f"{report['bought_in_time']:,}", "")
    funnel.add_row("completed a training", f"{report['completed_training']:,}", "")
    for k, row in report["payments"].get("incentive", {}).items():
        other = []
        if row["stopped"]:
            other.append("stopped " + _by_reason(row["stopped"]))
        if row["failed"]:
            other.append("failed " + _by_reason(row["failed"]))
        if row["pending"] or row["conflict"]:
            other.append(f"pending {row['pending'] + row['conflict']:,}")
        funnel.add_row(f"incentive {k} paid", f"{row['paid']:,}", "; ".join(other))
    for k, row in report["payments"].get("survey", {}).items():
        funnel.add_row(f"survey {k} paid", f"{row['paid']:,}", f"of {row['due']:,} answered")
    for reason, v in report["revoked"].items():
        funnel.add_row(
            f"revoked: {reason}", f"{v['count']:,}", f"{_rupiah(v['rupiah_returned'])} returned"
        )
    for reason, n in report["reasons"].get("STOPPED", {}).items():
        funnel.add_row(f"stopped: {reason}", f"{n:,}", "")
    console.print(funnel)
    states = ", ".join(f"{s} {n:,}" for s, n in report["states"].items())
    console.print(f"now: {states}")
    money = Table(title="Money by benefit")
    money.add_column("benefit")
    money.add_column("rupiah", justify="right")
    money.add_row("training balance credited", _rupiah(report["rupiah_credited"]))
    money.add_row("  returned by revocations", _rupiah(report["rupiah_returned"]))
    for benefit, amount in report["rupiah_paid"].items():
        money.add_row(f"{benefit} paid", _rupiah(amount))
    console.print(money)
    console.print(
        f"used at the issuer, no platform event: {report['card_used_at_issuer']:,}; "
        f"paid before exclusion: {report['paid_before_exclusion']['count']:,} "
        f"({_rupiah(report['paid_before_exclusion']['rupiah'])}); unmatched events: "
        f"{report['unmatched_events']:,}; completions without purchase: "
        f"{report['completions_without_purchase']:,}; conservation "
        f"{'holds' if report['conservation_ok'] else 'BROKEN'}"
    )
    print_surveys(report["surveys"])


def print_surveys(surveys: dict) -> None:
    """Survey answers as counts and the distribution of the fixed choices: never a
    comment, never whose answer."""
    from rich.console import Console
    from rich.table import Table

    answered = ", ".join(f"survey {k} {n:,}" for k, n in surveys["answered"].items())
    table = Table(title=f"Survey answers ({answered or 'none yet'})")
    table.add_column("question")
    table.add_column("answers", justify="left")
    for name, counts in surveys["choices"].items():
        table.add_row(name, ", ".join(f"{choice} {n:,}" for choice, n in counts.items()))
    table.add_row("comment left", f"{surveys['with_comment']:,}")
    Console().print(table)


def _by_reason(counts: dict) -> str:
    if not counts:
        return "0"
    return ", ".join(f"{r} {n:,}" for r, n in sorted(counts.items()))


@payout.command("reconcile")
@click.option("--as-of", "as_of", required=True, help="The run's date, YYYY-MM-DD.")
@click.option("--json", "as_json", is_flag=True)
def payout_reconcile(as_of: str, as_json: bool) -> None:
    """That run's payments against each payment partner's statement."""
    from tasks.payout import reconcile

    app = _runtime(_load_partners())
    result = reconcile(app.sessions, app.partners.payments, _as_of(as_of))
    if as_json:
        click.echo(json.dumps(result, default=str))
    else:
        for provider, r in result["partners"].items():
            click.echo(
                f"{provider}: ledger {r['ledger_count']:,} ({_rupiah(r['ledger_amount'])}), "
                f"statement {r['statement_count']}, missing {r['missing_in_statement']}, "
                f"unknown {r['unknown_in_statement']}: {'ok' if r['ok'] else 'MISMATCH'}"
            )
    sys.exit(0 if result["ok"] else 1)
