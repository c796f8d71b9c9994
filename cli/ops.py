"""`prakerja audit`, `blacklist`, `serve` and `ops setup`: the operators' other commands."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

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
@click.option("--verify", is_flag=True, help="Check the hash chain (exit 1 at a broken row).")
def audit_command(wave_id: int | None, as_json: bool, verify: bool) -> None:
    """Every operator action, oldest first, with who, when, what, before and after."""
    from tasks.audit import audit_trail
    from tasks.audit import verify as verify_chain

    rt = _runtime()
    with rt.sessions() as session:
        if verify:
            checked, broken = verify_chain(session)
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "ok": broken is None,
                            "rows": checked,
                            "first_broken": None
                            if broken is None
                            else {"id": broken.id, "why": broken.why},
                        }
                    )
                )
            elif broken is None:
                click.echo(f"audit trail intact: {checked:,} rows, hash chain verified")
            else:
                click.echo(f"error: audit trail broken at {broken}", err=True)
            sys.exit(EXIT_OK if broken is None else EXIT_ERROR)
        rows = audit_trail(session, wave_id)
    if as_json:
        click.echo(json.dumps(rows))
        return
    from cli import render

    render.audit(rows)


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
