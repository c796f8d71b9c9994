"""`prakerja generate`, `simulator` and `simulator-messages`: the synthetic export and the
partner simulator."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from cli.root import (
    EXIT_ERROR,
    _progress,
    _refuse,
    log,
    main,
    settings,
)


@main.command()
@click.option("--registrants", "-n", type=click.IntRange(1), required=True)
@click.option("--seed", "-s", required=True, help="Same seed as the simulator's.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True)
@click.option(
    "--reference-date",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Ages are made relative to this date (default: today, Asia/Jakarta).",
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write each row's intended result (for tests).",
)
def generate(registrants: int, seed: str, out: str, reference_date, truth) -> None:
    """Writes a synthetic registrant export shaped like wave 1 of 2020."""
    from partners.simulator.generate import generate_export
    from rules.settings import jakarta_today

    ref = reference_date.date() if reference_date else jakarta_today()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = generate_export(
        out,
        registrants=registrants,
        seed=seed,
        reference_date=ref,
        truth_path=truth,
        progress=_progress("generate", registrants),
    )
    click.echo(
        f"wrote {registrants} registrants to {out} in {time.monotonic() - started:.1f} s", err=True
    )
    click.echo(json.dumps(summary, default=str), err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True, type=int)
@click.option("--seed", default="demo", show_default=True)
@click.option("--faults", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--write-partners",
    type=click.Path(dir_okay=False),
    default=None,
    help="Once listening, write a partners file (for PRAKERJA_PARTNERS) pointing every "
    "partner at this simulator's port.",
)
@click.option(
    "--api-key-env",
    default="PRAKERJA_SIMULATOR_API_KEY",
    show_default=True,
    help="The key variable that file names in every section (any non-empty key works).",
)
@click.option(
    "--lives",
    type=click.Choice(["seeded", "none"]),
    default="seeded",
    show_default=True,
    help="Training events: each credited card's seeded life on the platforms' feeds, or "
    "none but those scripted through POST /_admin/training/events.",
)
def simulator(
    host: str,
    port: int,
    seed: str,
    faults: str | None,
    write_partners: str | None,
    api_key_env: str,
    lives: str,
) -> None:
    """Serves every simulated partner (registry, agencies, payment partners, card issuer,
    training platforms, SMS gateway) on one port.

    Its /_admin routes answer loopback clients, and others only with the token of
    $PRAKERJA_SIMULATOR_ADMIN_TOKEN (sent as "Authorization: Bearer <token>")."""
    from partners.simulator.server import (
        ADMIN_TOKEN_ENV,
        CannotListen,
        admin_token,
        serve,
    )

    try:
        token = admin_token(settings().simulator_admin_token)
    except ValueError as exc:
        _refuse(str(exc))
    if write_partners is not None and not Path(write_partners).resolve().parent.is_dir():
        _refuse(f"--write-partners {write_partners}: no such folder")
    if not api_key_env.isidentifier():
        _refuse("--api-key-env: must be an environment variable name")

    def listening(bound: int) -> None:  # the URL only once the port is ours
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"partner simulator on http://{shown}:{bound} (seed {seed!r})", err=True)
        if token is None and host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"  /_admin answers loopback only ({ADMIN_TOKEN_ENV} unset)", err=True)
        if write_partners is not None:
            _write_simulator_partners(Path(write_partners), host, bound, api_key_env)

    try:
        serve(host, port, seed, faults, admin_token=token, on_listening=listening, lives=lives)
    except CannotListen as exc:  # a busy port: the environment, not the input (exit 1)
        log.debug("bind failed", exc_info=True)
        click.echo(f"error: the partner simulator {exc}", err=True)
        sys.exit(EXIT_ERROR)


def _write_simulator_partners(path: Path, host: str, port: int, api_key_env: str) -> None:
    """The partners file for a simulator listening on `host:port`, written whole (a
    temporary file renamed over it): whoever waits for it never reads half a file."""
    from partners.config import simulator_partners_text

    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    target = wildcard.get(host, host)
    shown = f"[{target}]" if ":" in target else target
    text = simulator_partners_text(f"http://{shown}:{port}", api_key_env)
    text = text[text.index("\n[") + 1 :]  # the built-in file's own comments do not apply
    loopback = target in ("localhost", "::1") or target.startswith("127.")
    if not loopback:  # plain HTTP off loopback must be allowed by name (partners file rule)
        key_line = f'api_key_env = "{api_key_env}"'
        text = text.replace(key_line, f"{key_line}\nallow_insecure_http = true")
    header = (
        f"# Every partner on the simulator at http://{shown}:{port} "
        "(written by `prakerja simulator --write-partners`).\n"
        f"# Use: export PRAKERJA_PARTNERS={path.resolve()} {api_key_env}=simulator\n"
    )
    part = path.with_name(f".{path.name}.part")
    part.write_text(header + text, encoding="utf-8")
    part.replace(path)
    click.echo(
        f"  partners file {path}: export PRAKERJA_PARTNERS={path.resolve()} "
        f"{api_key_env}=simulator",
        err=True,
    )


@main.command("simulator-messages")
@click.option("--url", default="http://127.0.0.1:8700", show_default=True, help="The simulator.")
@click.option("--template", default="login_code", show_default=True, help="'' for every template.")
@click.option("--last", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def simulator_messages(url: str, template: str, last: int, as_json: bool) -> None:
    """What the simulator's message gateway received, newest last (sign-in codes)."""
    import requests

    from rules.masking import mask_phone

    try:
        admin = settings().simulator_admin_token  # needed off loopback
        token = admin.get_secret_value() if admin else None
        answer = requests.get(
            f"{url.rstrip('/')}/_admin/messages",
            params={"template": template or None, "last": last},
            headers={"Authorization": f"Bearer {token}"} if token else None,
            timeout=5,
        )
        answer.raise_for_status()
    except requests.RequestException as exc:
        if getattr(exc.response, "status_code", None) == 403:
            why = "refused /_admin (403): off loopback, set PRAKERJA_SIMULATOR_ADMIN_TOKEN"
        else:
            why = f"did not answer: {type(exc).__name__}"
        click.echo(f"error: the simulator at {url} {why}", err=True)
        sys.exit(EXIT_ERROR)
    messages = answer.json()["messages"]
    for m in messages:
        m["to"] = mask_phone(m.get("to"))
    if as_json:
        click.echo(json.dumps(messages))
        return
    if not messages:
        click.echo("no messages yet", err=True)
    from datetime import datetime

    from portal.words import WIB

    for m in messages:
        at = datetime.fromtimestamp(m["at"], WIB).strftime("%H:%M:%S WIB")
        params = " ".join(f"{k}={v}" for k, v in (m.get("params") or {}).items())
        click.echo(f"{at}  {m['to']:>16}  {m['template']:<16} {params}  ({m['status']})")
