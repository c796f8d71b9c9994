"""`prakerja audit`, `blacklist`, `serve` and `ops setup`: the operators' other commands."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from cli.root import (
    EXIT_ERROR,
    EXIT_OK,
    _login_user,
    _prefect_api_url,
    _refuse,
    _runtime,
    main,
    settings,
)


@main.command("audit")
@click.option("--wave", "wave_id", type=click.IntRange(1), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--verify", is_flag=True, help="Check the hash chain, the witnesses and the approvals."
)
@click.option(
    "--witness",
    "witness_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A witness file to hold the trail to (besides PRAKERJA_AUDIT_WITNESS); implies --verify.",
)
def audit_command(
    wave_id: int | None, as_json: bool, verify: bool, witness_files: tuple[Path, ...]
) -> None:
    """Every operator action, oldest first, with who, when, what, before and after."""
    from tasks.audit import audit_trail

    rt = _runtime()
    if verify or witness_files:
        _verify_audit(rt, list(witness_files), as_json)
    with rt.sessions() as session:
        rows = audit_trail(session, wave_id)
    if as_json:
        click.echo(json.dumps(rows))
        return
    from cli import render

    render.audit(rows)


def _verify_audit(rt, witness_files: list[Path], as_json: bool) -> NoReturn:
    """`audit --verify`: the head, what was checked, exit 1 naming the first altered or
    missing row, or an approval with no audit row of its own."""
    from tasks.audit import WitnessError, verify_trail

    configured = rt.settings.audit_witness
    files = list(witness_files)
    notes: list[str] = []
    if configured:
        if Path(configured).is_file():
            if not any(Path(configured).resolve() == f.resolve() for f in files):
                files.append(Path(configured))
        else:
            notes.append(f"witness file {configured} (PRAKERJA_AUDIT_WITNESS) not found")
    try:
        with rt.sessions() as session:
            check = verify_trail(session, files)
    except WitnessError as exc:
        _refuse(f"--witness: {exc}")
    first = check.first_break
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": check.ok,
                    "rows": check.rows,
                    "head": None
                    if check.head is None
                    else {"id": check.head[0], "hash": check.head[1]},
                    "first_broken": None if first is None else {"id": first.id, "why": first.why},
                    "breaks": [{"id": b.id, "why": b.why} for b in check.breaks],
                    "witnesses": [
                        {
                            "source": w.source,
                            "rows": len(w.rows),
                            "last_id": w.last_id,
                            "note": w.note,
                        }
                        for w in check.witnesses
                    ],
                    "approvals": check.approvals,
                    "unaudited_approvals": [
                        {"table": a.table, "id": a.id, "by": a.approved_by} for a in check.unaudited
                    ],
                    "notes": notes,
                }
            )
        )
        sys.exit(EXIT_OK if check.ok else EXIT_ERROR)
    if check.head is None:
        click.echo("head: no rows yet")
    else:
        click.echo(f"head: row {check.head[0]}, hash {check.head[1]}")
    click.echo(f"hash chain: {check.rows:,} rows")
    for w in check.witnesses:
        last = f", last row {w.last_id}" if w.last_id is not None else ""
        note = f" ({w.note})" if w.note else ""
        click.echo(f"witness {w.source}: {len(w.rows):,} rows witnessed{last}{note}")
    if not check.witnesses:
        click.echo("witness: none (--witness FILE, PRAKERJA_AUDIT_WITNESS or a Prefect API)")
    for note in notes:
        click.echo(f"witness: {note}")
    click.echo(f"approvals: {check.approvals:,} checked against their audit rows")
    for b in sorted(check.breaks, key=lambda b: b.id):
        click.echo(f"error: audit trail broken at {b}", err=True)
    for a in check.unaudited:
        click.echo(
            f"error: approval {a} has no audit row with the same approver and digest", err=True
        )
    if check.ok:
        click.echo("audit trail intact: hash chain, witnesses and approvals verified")
    sys.exit(EXIT_OK if check.ok else EXIT_ERROR)


@main.group()
def blacklist() -> None:
    """The program's revocation list (BLACKLISTED)."""


@blacklist.command("add")
@click.argument("nik")
@click.option("--reason", required=True)
@click.option("--by", "added_by", default=lambda: _login_user())
def blacklist_add(nik: str, reason: str, added_by: str) -> None:
    from tasks.audit import Actor
    from tasks.blacklist import add_to_blacklist, entry_problem

    # The arguments, checked before the database is opened: an import's errors name its
    # lines, this command's its NIK argument and --reason.
    problem = entry_problem(nik, reason)
    if problem:
        name, _, why = problem.partition(": ")
        _refuse(f"{'NIK' if name == 'nik' else '--reason'}: {why}")
    rt = _runtime()
    try:
        added = add_to_blacklist(
            rt.sessions, [(nik, reason)], added_by=added_by, actor=Actor.here(added_by)
        )
    except ValueError as exc:
        _refuse(str(exc))
    click.echo(f"{added} NIK added to the revocation list", err=True)


@blacklist.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--by", "added_by", default=lambda: _login_user())
def blacklist_import(file: str, added_by: str) -> None:
    """FILE: CSV with header `nik,reason`."""
    from tasks.audit import Actor
    from tasks.blacklist import add_to_blacklist, read_blacklist_file
    from tasks.intake import file_sha256

    rt = _runtime()
    try:
        entries = read_blacklist_file(file)
        source = {"file": Path(file).name, "sha256": file_sha256(file)}
        added = add_to_blacklist(
            rt.sessions, entries, added_by=added_by, actor=Actor.here(added_by), source=source
        )
    except ValueError as exc:
        _refuse(str(exc))
    click.echo(f"{added} of {len(entries)} NIKs added to the revocation list", err=True)


@main.command("serve")
@click.option(
    "--limit", type=click.IntRange(1), default=None, help="Most runs at once (default: no limit)."
)
@click.option(
    "--replace",
    is_flag=True,
    help="Delete the same deployments made by `prefect deploy` (work pool) and serve them here.",
)
def serve_command(limit: int | None, replace: bool) -> None:
    """Serves every deployment of operations.md from this machine, no work pool needed."""
    from deployments.serve import DEPLOYMENTS, deployed_to_a_pool, remove, serve

    logging.getLogger("httpx").setLevel(logging.WARNING)
    pooled = deployed_to_a_pool()
    if pooled and not replace:
        _refuse(
            "these deployments were made by `prefect deploy` for a worker: "
            + ", ".join(f"{n} (pool {p})" for n, p in pooled.items())
            + "; keep using the worker, or run `prakerja serve --replace` to serve them here"
        )
    if pooled:
        remove(list(pooled))
        click.echo(f"replaced the pool deployments {', '.join(pooled)}", err=True)
    if not _prefect_api_url():
        click.echo(
            "warning: PREFECT_API_URL is not set: the deployments live on a temporary server "
            "that ends with this process (no UI to start runs from)",
            err=True,
        )
    names = ", ".join(d.name for d in DEPLOYMENTS)
    click.echo(f"serving {names}; stop with Ctrl-C (schedules are paused then)", err=True)
    serve(limit=limit)


@main.group()
def ops() -> None:
    """Operations in Prefect: the alerts' notification block and automations."""


@ops.command("setup")
@click.option(
    "--webhook-url",
    default=None,
    help="Webhook receiving JSON {subject, body} (default: $PRAKERJA_ALERT_WEBHOOK_URL).",
)
@click.option(
    "--block",
    default=None,
    help="Notify through this existing notification block instead, as <type-slug>/<name> "
    "(e.g. slack-webhook/ops, email/ops).",
)
@click.option("--json", "as_json", is_flag=True)
def ops_setup(webhook_url: str | None, block: str | None, as_json: bool) -> None:
    """Creates or updates the notification block and the automations; idempotent."""
    from deployments.automations import SetupError, setup

    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not _prefect_api_url():
        _refuse("ops setup needs a Prefect server: set PREFECT_API_URL (see docs/operations.md)")
    try:
        result = setup(webhook_url=webhook_url, block=block, settings=settings())
    except SetupError as exc:
        _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(result))
        return
    b = result["block"]
    click.echo(f"notification block {b['name']}: {b['state']}")
    for name, state in result["automations"].items():
        click.echo(f"automation {name!r}: {state}")
