"""The `prakerja` command: run waves, inspect them, and serve the partner simulator."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path

import click

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_PENDING, EXIT_BUSY = 0, 1, 2, 3, 4
EXIT_SIGN_OFF = 5  # nothing pending; the wave waits for sign-off before any credit
log = logging.getLogger("prakerja")


def _setup_logging(verbose: bool = False) -> None:
    from tasks.log_masking import install_masking

    # This program's machines talk only to their partners: no telemetry calls.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side usage data (and notice)
    # Prefect's temporary server (no PREFECT_API_URL) gets 20 s to start by default: not
    # enough on a busy 2-core machine, where the wave then fails before its first stage.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("prakerja").setLevel(logging.DEBUG if verbose else logging.INFO)
    global _VERBOSE
    _VERBOSE = verbose
    # Prefect's run logs (a "Finished in state Completed()" per task, the stages' counts)
    # still go to the Prefect API; the terminal shows one line per stage
    # (tasks/stage_lines.py) and Prefect's warnings and errors, and all of it with -v.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stderr,
            sys.__stderr__,
        ):
            if verbose:
                handler.removeFilter(_quiet_prefect)
            else:
                handler.addFilter(_quiet_prefect)
    install_masking()


_VERBOSE = False


def _quiet_prefect(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith("prefect")


def _refuse(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_REFUSED)


def _runtime(partners_config=None):
    from models.schema import SchemaError
    from tasks.runtime import configure

    try:
        return configure(partners_config=partners_config)
    except SchemaError as exc:  # older or newer than this code: `prakerja db upgrade`
        _refuse(str(exc))
    except Exception as exc:  # noqa: BLE001 - the database cannot be opened: one line
        log.debug("the program database cannot be opened", exc_info=True)
        click.echo(f"error: {_database_failure(exc)}", err=True)
        sys.exit(EXIT_ERROR)


def _shown_database_url() -> str:
    """PRAKERJA_DATABASE_URL as it can be printed: its password masked."""
    from sqlalchemy.engine import make_url

    from models.db import database_url

    url = database_url()
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: show its scheme only
        return url.split("://", 1)[0] + "://..."


def _database_failure(exc: BaseException) -> str:
    """One line: which database (PRAKERJA_DATABASE_URL, password masked) failed, and why.

    "Why" is the driver's own reason, without the statement, its parameters, or the host
    repeated ("connection to server at ..., port 1 failed: Connection refused" ->
    "Connection refused"); a SQLite folder that cannot be made names that folder."""
    import re

    from rules.masking import mask_text

    where = f"the program database (PRAKERJA_DATABASE_URL={_shown_database_url()})"
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return f"{where} cannot be opened: {exc.filename}: {exc.strerror or exc}"
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().split("\n", 1)[0].strip()
    why = re.split(r"\bfailed: ", first)[-1].strip() or type(orig).__name__
    why = re.sub(r"^FATAL:\s+", "", why)
    return f"{where} cannot be opened: {mask_text(why)}"


def _load_partners():
    from partners.config import ConfigError, load_partners_config

    try:
        return load_partners_config()
    except ConfigError as exc:
        _refuse(str(exc))


class _Main(click.Group):
    """A failure no command named ends as one line on standard error (interfaces.md), its
    text cleaned like a task's (rules.masking.error_text: no SQL parameters, no database
    DETAIL, numbers, emails and birth dates masked); `-v` logs the masked traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure: exit 1, one line
            from sqlalchemy.exc import OperationalError

            from models.schema import SchemaError
            from rules.masking import error_text

            if isinstance(exc, SchemaError):  # a database this code must not use
                _refuse(str(exc))
            log.debug("failure", exc_info=True)  # masked by tasks.log_masking.MaskingFilter
            if isinstance(exc, OperationalError):  # the database went away mid-command
                click.echo(f"error: {_database_failure(exc)}", err=True)
            else:
                click.echo(f"error: {error_text(exc)}", err=True)
            sys.exit(EXIT_ERROR)


@click.group(cls=_Main)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on standard error.")
def main(verbose: bool) -> None:
    """Runs the waves of the pre-employment benefit (see README.md)."""
    _setup_logging(verbose)


# ---------------------------------------------------------------- generate / simulator
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


def _progress(what: str, total: int):
    last = [0.0]

    def report(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2 or done >= total:
            last[0] = now
            click.echo(f"{what}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)", err=True)

    return report


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
def simulator(
    host: str,
    port: int,
    seed: str,
    faults: str | None,
    write_partners: str | None,
    api_key_env: str,
) -> None:
    """Serves every simulated partner (registry, agencies, payment partners, card issuer,
    SMS gateway) on one port.

    Its /_admin routes answer loopback clients, and others only with the token of
    $PRAKERJA_SIMULATOR_ADMIN_TOKEN (sent as "Authorization: Bearer <token>")."""
    from partners.simulator.server import (
        ADMIN_TOKEN_ENV,
        CannotListen,
        admin_token_from_env,
        serve,
    )

    try:
        token = admin_token_from_env()
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
        serve(host, port, seed, faults, admin_token=token, on_listening=listening)
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


# ---------------------------------------------------------------- portal
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8780, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def portal(host: str, port: int, workers: int) -> None:
    """Serves the registrant dashboard (portal.md) over the program database."""
    import uvicorn

    from models.config import read_settings
    from partners.config import ConfigError, load_partners_config
    from portal.settings import MIN_SECRET, SECRET_ENV, is_loopback

    loopback = is_loopback(host)
    given = read_settings().portal_secret
    secret = given.get_secret_value() if given else None
    if secret is not None and len(secret) < MIN_SECRET:
        _refuse(f"{SECRET_ENV} must be at least {MIN_SECRET} characters")
    if secret is None:
        if not loopback:
            _refuse(
                f"{SECRET_ENV} is not set: it is required when --host is not a loopback "
                f"address (at least {MIN_SECRET} characters, the same for every portal process)"
            )
        # On loopback a secret made now; every worker of this command shares it.
        os.environ[SECRET_ENV] = secrets.token_urlsafe(48)
    os.environ["PRAKERJA_PORTAL_SECURE_COOKIE"] = "false" if loopback else "true"
    try:
        load_partners_config()  # the notifier sends the codes: refuse a bad file now
    except ConfigError as exc:
        _refuse(str(exc))
    from models.db import database_url
    from models.schema import SchemaError

    try:
        from portal.store import Store, make_portal_engine

        Store(make_portal_engine(database_url()), b"-").close()  # tables, and reachable
    except SchemaError as exc:
        _refuse(str(exc))
    except Exception as exc:
        _refuse(f"the program database cannot be opened: {type(exc).__name__}")
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"dashboard on http://{shown}:{port}/ ({workers} worker{'s' * (workers > 1)}); "
        "stop with Ctrl-C",
        err=True,
    )
    serve_portal(
        uvicorn.Config(
            "portal.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
        )
    )


def serve_portal(config) -> None:
    """uvicorn.run, with TCP_NODELAY on the listening socket (accepted sockets inherit it).

    uvicorn binds the socket with protocol 0, and asyncio then leaves Nagle's algorithm on
    for every connection: each answer's body waited ~40 ms for the client's delayed ACK,
    which capped the dashboard at ~1,400 reads/s on 2 cores with the CPU half idle
    (bench/portal_load.py). uvloop, when installed, sets it too; this does not rely on it.
    """
    import socket

    from uvicorn.server import Server
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = Server(config=config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        sys.exit(EXIT_ERROR)


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
        from models.config import read_settings

        admin = read_settings().simulator_admin_token  # needed off loopback
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


# ---------------------------------------------------------------- wave
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


def _by_option(f):
    return click.option(
        "--by",
        "by",
        default=None,
        help="Who does this, for the audit trail (default: the login user).",
    )(f)


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
    """The run's Execution: these flags over this process's PRAKERJA_* environment."""
    from pydantic import ValidationError

    from tasks.execution import Execution

    try:
        return Execution.from_env(**overrides)
    except (ValueError, ValidationError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else None
        _refuse(errors[0]["msg"] if errors else str(exc))


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
    under_lease=None,
    execution=None,
    by: str | None = None,
) -> int:
    """`under_lease(held)`, if given, runs first once the lease is held (raise-quota);
    `by` names who runs it in the audit trail (default: the login user)."""
    execution = execution or _execution()
    from models.enums import WaveStatus
    from models.tables import Wave
    from rules.intake import HeaderError, MissingColumnsError
    from rules.settings import SettingsError, WaveSettings, jakarta_today
    from tasks.intake import check_header, file_sha256
    from tasks.waves import WaveBusyError, create_or_resume_wave

    if registrants is not None:
        if not Path(registrants).is_file():
            _refuse(f"--registrants: no such file: {registrants}")
        try:
            check_header(registrants)
        except (MissingColumnsError, HeaderError) as exc:
            _refuse(f"--registrants {registrants}: {exc}")
    if partners_config is None:
        partners_config = _load_partners()
    rt = _runtime(partners_config)
    rt.use_partner_limits(execution.partner_limits)
    with rt.sessions() as session:
        existing = session.get(Wave, wave_id)
    if existing is None:
        if registrants is None:
            _refuse(f"--registrants: wave {wave_id} does not exist yet: name its export")
        if quota is None:
            _refuse(f"--quota: wave {wave_id} does not exist yet: give its quota")
    values = {k: v for k, v in flags.items() if v is not None}
    if "reference_date" in values:
        values["reference_date"] = values["reference_date"].date()
    if quota is not None:
        values["quota"] = quota
    if lottery_seed is not None:
        values["lottery_seed"] = lottery_seed
    given = set(values)
    base = {name: getattr(existing, name) for name in WaveSettings.model_fields} if existing else {}
    if existing is not None and base.get("sign_off") is None:
        base["sign_off"] = 0  # a wave from before the setting
    merged = {
        "wave_id": wave_id,
        "lottery_seed": secrets.token_hex(16),
        "reference_date": jakarta_today(),
        **base,
        **values,
    }
    try:
        settings = WaveSettings(**merged)
        wave_row, created = create_or_resume_wave(
            rt.sessions,
            settings,
            source_path=str(Path(registrants).resolve()) if registrants else None,
            source_sha256=file_sha256(registrants) if registrants else None,
            given=given,
            # A resumed wave's keep_open changes only under the lease (below): a run
            # refused as busy changes nothing.
            keep_open=existing.keep_open if existing is not None else keep_open,
        )
    except SettingsError as exc:
        _refuse(str(exc))
    if under_lease is None and wave_row.status == WaveStatus.CLOSED:
        # A closed wave has no stage left to run: say so, run nothing (exit 0: the wave is
        # done and nothing is pending). raise-quota refuses a closed wave itself (exit 2).
        click.echo(_closed_line(wave_id), err=True)
        return EXIT_OK
    from tasks.lease import exit_process, hold_wave_lease, update_wave_under_lease

    with contextlib.ExitStack() as stack:
        try:
            # Losing the lease ends this process at once (exit 1): tasks/lease.py.
            held = stack.enter_context(hold_wave_lease(rt.sessions, wave_id, on_lost=exit_process))
        except WaveBusyError as exc:
            click.echo(f"error: {exc}", err=True)
            return EXIT_BUSY
        if under_lease is None:
            with rt.sessions() as session:
                now_closed = session.get(Wave, wave_id).status == WaveStatus.CLOSED
            if now_closed:  # the run that held the lease closed it meanwhile
                click.echo(_closed_line(wave_id), err=True)
                return EXIT_OK
        # Only now, with the lease held: a run refused as busy resumed nothing.
        click.echo(
            f"wave {wave_id}: {'created' if created else 'resumed'}; lottery seed sha256 "
            f"{wave_row.lottery_seed_sha256}",
            err=True,
        )
        _audit_run(rt.sessions, by, wave_row, created, given, keep_open, registrants)
        try:
            if under_lease is not None:
                under_lease(held)
            if keep_open != wave_row.keep_open:
                update_wave_under_lease(held, keep_open=keep_open)
            from tasks import shared_limits

            if execution.partner_limits == "prefect":
                shared_limits.ensure_partner_limits(rt.partners_config)
            from tasks.stage_lines import StageLines

            if not _prefect_api_url():
                click.echo(
                    f"wave {wave_id}: starting Prefect's temporary local server "
                    "(PREFECT_API_URL is not set; about 10 s)",
                    err=True,
                )
            with StageLines(wave_id, live=False if _VERBOSE else None):
                summary = _run_flow(
                    wave_id, registrants, keep_open, draw_without_pending, execution
                )
        except Exception as exc:  # noqa: BLE001 - report any failure as exit 1
            from rules.masking import error_text

            click.echo(f"error: wave {wave_id} failed: {error_text(exc)}", err=True)
            return EXIT_ERROR
    report = summary["report"]
    if not quiet:
        click.echo(
            f"wave {wave_id}: Prefect flow run wave-{wave_id} ({summary['flow_run_id']})", err=True
        )
        _print_funnel(report)
    pending = report["outcomes"].get("PENDING", 0)
    left = summary["close"].get("work_left", {})
    sign_off = summary.get("sign_off") or {}
    if not pending and sign_off.get("waiting"):
        click.echo(
            f"wave {wave_id}: waits for sign-off before any credit: "
            f"{len(sign_off['approvals'])} of {sign_off['required']} approvals of "
            f"{sign_off['confirmed']:,} confirmed participants, "
            f"{_rupiah(sign_off['total_amount'])} "
            f"(digest {sign_off['digest'][:12]}...); approve with `prakerja wave sign-off "
            f"--wave {wave_id} --by NAME`, then run it again",
            err=True,
        )
        return EXIT_SIGN_OFF
    if pending or left:
        waiting = ", ".join(f"{k} {v:,}" for k, v in report["pending"].items() if v)
        click.echo(
            f"wave {wave_id}: {pending:,} registrants pending"
            f"{f' ({waiting})' if waiting else ''}; rerun to pick them up",
            err=True,
        )
        return EXIT_PENDING
    return EXIT_OK


def _rupiah(amount: int) -> str:
    from rules.money import rupiah

    return rupiah(amount)


def _audit_run(sessions, by, wave_row, created, given, keep_open, registrants) -> None:
    """The run's audit rows: the wave's creation with its settings, then the run."""
    from rules.settings import WaveSettings
    from tasks import audit

    actor = audit.Actor.here(by)
    w = wave_row.wave_id
    if created:
        settings = {
            name: getattr(wave_row, name)
            for name in WaveSettings.model_fields
            if name not in ("wave_id", "lottery_seed")
        }
        settings["lottery_seed_sha256"] = wave_row.lottery_seed_sha256
        settings["export_sha256"] = wave_row.source_sha256
        audit.record(sessions, actor, "wave.created", wave_id=w, after=settings)
    run = {"via": "cli", "keep_open": keep_open}
    if registrants:
        run["export"] = Path(registrants).name
    if not created and given:
        run["settings_given"] = sorted(given)
    audit.record(sessions, actor, "wave.run", wave_id=w, after=run)


def _closed_line(wave_id: int) -> str:
    return (
        f"wave {wave_id} is closed: nothing to do (its results: prakerja wave report "
        f"--wave {wave_id})"
    )


def _run_flow(
    wave_id: int,
    registrants: str | None,
    keep_open: bool,
    draw_without_pending: bool,
    execution,
) -> dict:
    from prefect import tags

    from flows.wave import wave as wave_flow

    with tags("prakerja", f"wave-{wave_id}"):
        state = wave_flow(
            wave_id=wave_id,
            registrants_path=str(Path(registrants).resolve()) if registrants else None,
            draw_without_pending=draw_without_pending,
            keep_open=keep_open,
            execution=execution,
            return_state=True,
        )
    summary = state.result()
    summary["flow_run_id"] = str(state.state_details.flow_run_id)
    return summary


def _print_funnel(report: dict) -> None:
    from tasks import render

    render.funnel(report)


@wave.command("raise-quota")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--quota", type=click.IntRange(1), required=True)
@_by_option
def wave_raise_quota(wave_id: int, quota: int, by: str | None) -> None:
    """Raises an open wave's quota; the new seats are drawn and processed."""
    from models.tables import Wave
    from tasks.audit import Actor
    from tasks.draw import QuotaError, raise_quota

    partners_config = _load_partners()
    rt = _runtime(partners_config)
    with rt.sessions() as session:
        row = session.get(Wave, wave_id)
    if row is None:
        _refuse(f"wave {wave_id} does not exist")
    if row.status == "CLOSED":
        _refuse(f"wave {wave_id} is closed: its quota cannot be raised")

    def raise_it(held) -> None:
        # Under the lease, and only while the wave is still open: a busy wave (exit 4)
        # or a closed one (exit 2) is left as it was.
        try:
            result = raise_quota(
                rt.sessions, wave_id, quota, lease_owner=held.lease.owner, actor=Actor.here(by)
            )
        except (LookupError, QuotaError) as exc:
            _refuse(str(exc))
        click.echo(
            f"wave {wave_id}: quota {result['old_quota']:,} -> {result['new_quota']:,}",
            err=True,
        )

    sys.exit(
        run_wave_command(
            wave_id=wave_id,
            registrants=None,
            quota=None,
            lottery_seed=None,
            keep_open=row.keep_open,
            draw_without_pending=False,
            flags={},
            partners_config=partners_config,
            under_lease=raise_it,
            by=by,
        )
    )


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
    from tasks.reporting import wave_report

    rt = _runtime()
    with rt.sessions() as session:
        try:
            report = wave_report(session, wave_id)
        except LookupError as exc:
            _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(report, default=str))
        return
    from tasks import render

    render.wave_report(report)


@wave.command("export")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def wave_export(wave_id: int, out: str) -> None:
    """Every data row's outcome: line,registration_id,nik,outcome,reason."""
    from tasks.reporting import export_outcomes

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
    from tasks.reporting import reconcile

    rt = _runtime(_load_partners())
    try:
        result = reconcile(rt.sessions, rt.partners.issuer, wave_id)
    except LookupError as exc:
        _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(result))
    else:
        from tasks import render

        render.reconcile(result)
    sys.exit(EXIT_OK if result["ok"] else EXIT_ERROR)


@main.command()
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--nik", required=True)
@click.option("--json", "as_json", is_flag=True)
def explain(wave_id: int, nik: str, as_json: bool) -> None:
    """One registrant's path: every check, its answer, when, and the final reason."""
    from tasks.reporting import explain as explain_one

    rt = _runtime()
    with rt.sessions() as session:
        try:
            result = explain_one(session, wave_id, nik)
        except LookupError as exc:
            _refuse(str(exc))
    if result is None:
        click.echo(f"error: no registrant with that NIK in wave {wave_id}", err=True)
        sys.exit(EXIT_ERROR)
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    from tasks import render

    render.explain(result)


def _login_user() -> str:
    from tasks.audit import login_user

    return login_user()


@wave.command("sign-off")
@click.option("--wave", "wave_id", type=click.IntRange(1), required=True)
@click.option("--by", "by", required=True, help="The approver's name.")
@click.option("--json", "as_json", is_flag=True)
def wave_sign_off(wave_id: int, by: str, as_json: bool) -> None:
    """Records one approval of the wave as it stands (seats, confirmed participants,
    total rupiah, draw digest) and prints what was approved."""
    from rules.signoff import approver_problem
    from tasks.audit import Actor
    from tasks.signoff import SignOffError, record_approval

    problem = approver_problem(by)
    if problem:
        _refuse(f"--by: {problem}")
    rt = _runtime()
    try:
        result = record_approval(rt.sessions, wave_id, Actor.here(by), via="cli")
    except (LookupError, SignOffError) as exc:
        _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    seen = result["approved_now"]
    seats = seen["seats"]
    if isinstance(seats, dict):
        seats = ", ".join(f"{p}: {n:,}" for p, n in sorted(seats.items()))
    else:
        seats = f"{seats:,}"
    click.echo(f"wave {wave_id} approved by {seen['by']} at {seen['at']}:")
    click.echo(f"  seats                   {seats}")
    click.echo(f"  confirmed participants  {seen['confirmed']:,}")
    click.echo(f"  total amount            {_rupiah(seen['total_amount'])}")
    click.echo(f"  draw digest             {seen['digest']}")
    n, need = len(result["approvals"]), result["required"]
    who = ", ".join(a["by"] for a in result["approvals"])
    if result["approved"]:
        click.echo(f"{n} of {need} approvals ({who}): the next run credits the wave.")
    else:
        click.echo(f"{n} of {need} approvals ({who}): waiting for {need - n} more.")


# ---------------------------------------------------------------- audit
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
    from tasks import render

    render.audit(rows)


# ---------------------------------------------------------------- blacklist
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


# ---------------------------------------------------------------- db
@main.group()
def db() -> None:
    """The program database's schema (README: Schema and upgrades)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Brings the program database (PRAKERJA_DATABASE_URL) to this release's schema."""
    from models.db import make_engine
    from models.schema import SchemaError, upgrade_database

    try:
        engine = make_engine()
    except OSError as exc:  # a SQLite folder that cannot be made
        click.echo(f"error: {_database_failure(exc)}", err=True)
        sys.exit(EXIT_ERROR)
    try:
        done = upgrade_database(engine)
    except SchemaError as exc:
        _refuse(str(exc))
    except Exception as exc:  # noqa: BLE001 - cannot connect, or a migration failed
        from sqlalchemy.exc import OperationalError

        from rules.masking import error_text

        log.debug("upgrade failed", exc_info=True)
        if isinstance(exc, OperationalError):
            click.echo(f"error: {_database_failure(exc)}", err=True)
        else:  # one transaction: nothing of the failed upgrade was kept
            click.echo(f"error: the upgrade failed and was undone: {error_text(exc)}", err=True)
        sys.exit(EXIT_ERROR)
    finally:
        engine.dispose()
    where = f"the program database (PRAKERJA_DATABASE_URL={_shown_database_url()})"
    after = ", ".join(done.after)
    if done.created:
        click.echo(f"{where} was empty: created at schema revision {after}")
    elif done.changed:
        before = ", ".join(done.before) or "none (made before schema revisions)"
        click.echo(f"{where} upgraded from schema revision {before} to {after}")
    else:
        click.echo(f"{where} is at schema revision {after}: nothing to do")


# ---------------------------------------------------------------- demo
@main.command()
@click.option("--registrants", "-n", type=click.IntRange(10), default=100_000, show_default=True)
@click.option("--seed", "-s", default="demo", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="var/demo", show_default=True)
def demo(registrants: int, seed: str, workdir: str) -> None:
    """A whole demo wave: synthetic export, local simulator, Prefect run, the funnel."""
    from partners.config import simulator_config
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorProcess
    from rules.funnel import demo_quota
    from rules.settings import jakarta_today

    started = time.monotonic()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "prakerja-demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.environ["PRAKERJA_DATABASE_URL"] = f"sqlite:///{db_path.resolve()}"
    export = work / "wave-1.csv"
    today = jakarta_today()
    click.echo(f"demo: generating {registrants:,} registrants (seed {seed!r})", err=True)
    generate_export(
        export,
        registrants=registrants,
        seed=seed,
        reference_date=today,
        progress=_progress("generate", registrants),
    )
    quota = demo_quota(registrants)
    reconciled = False
    with SimulatorProcess(seed) as sim:
        click.echo(
            f"demo: partner simulator at {sim.base_url}; running wave 1 "
            f"(quota {quota:,}) under Prefect",
            err=True,
        )
        code = run_wave_command(
            wave_id=1,
            registrants=str(export),
            quota=quota,
            lottery_seed=f"demo-{seed}",
            keep_open=False,
            draw_without_pending=False,
            flags={"reference_date": None},
            partners_config=simulator_config(sim.base_url),
        )
        if code in (EXIT_OK, EXIT_PENDING):
            reconciled = _demo_reconcile(sim.base_url)
    if code in (EXIT_OK, EXIT_PENDING):
        _demo_dashboard(work, seed)
    elapsed = time.monotonic() - started
    click.echo(f"\ndemo finished in {elapsed:.0f} s{_setup_time_note()} (exit {code}).")
    click.echo(
        "Prefect: flow run `wave-1` (tag prakerja) is in this machine's Prefect "
        f"database; browse it with `{_venv_command('prefect')} server start` then "
        "http://127.0.0.1:4200/runs"
        if not os.environ.get("PREFECT_API_URL")
        else f"Prefect: flow run `wave-1` at {_ui_url()}/runs"
    )
    click.echo(
        f"Inspect it: PRAKERJA_DATABASE_URL={os.environ['PRAKERJA_DATABASE_URL']} "
        f"{_venv_command('prakerja')} wave report --wave 1"
    )
    if code in (EXIT_OK, EXIT_PENDING) and not reconciled:
        code = EXIT_ERROR
    sys.exit(code)


def _demo_reconcile(simulator_url: str) -> bool:
    """The demo wave's ledger against the issuer's statement, while the simulator that
    holds that statement still runs (it lives and dies with the demo: a later `wave
    reconcile` on the demo database has no issuer to ask)."""
    from partners.config import simulator_config
    from tasks import render
    from tasks.reporting import reconcile

    rt = _runtime(simulator_config(simulator_url))
    result = reconcile(rt.sessions, rt.partners.issuer, 1)
    click.echo("")
    render.reconcile(result)
    click.echo(
        "(The statement is the demo simulator's and ends with it: reconcile the demo wave "
        "here, not later with `wave reconcile`.)"
    )
    return bool(result["ok"])


def _setup_time_note() -> str:
    """Whether the time includes creating .venv: `./prakerja` times its setup step and
    passes it on (PRAKERJA_SETUP_SECONDS); the demo's own clock starts after it."""
    from models.config import read_settings

    setup = read_settings().setup_seconds
    if setup is None:
        return " (the demo itself; any setup of .venv before it is not included)"
    if setup < 5:
        return " (.venv already existed: no setup time)"
    return f" (the demo itself; creating .venv took another {setup} s before it, once)"


def _venv_command(name: str) -> str:
    """How to call a command of this program's environment (`.venv/bin/prefect`) from
    here: the environment's own bin folder, relative when it is below this folder."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return name
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _demo_dashboard(work: Path, seed: str) -> None:
    """Announces the demo wave and says how to sign in to the dashboard as a registrant."""
    from tasks.audit import Actor
    from tasks.portal_index import announce_wave, demo_sign_ins

    rt = _runtime()
    announce_wave(  # an announcement like any other: in the audit trail
        rt.sessions,
        1,
        "Demo: hasil gelombang 1 sudah diumumkan. / Wave 1 results are out.",
        actor=Actor.here(None),
    )
    people = demo_sign_ins(rt.sessions, 1)
    guide = work / "try-the-dashboard.txt"
    db = os.environ["PRAKERJA_DATABASE_URL"]
    lines = [
        "Try the registrant dashboard on the demo wave (wave 1 is announced).",
        "",
        "1. The partners, with the message gateway that receives sign-in codes:",
        f"     ./prakerja simulator --seed {seed}",
        "2. The dashboard, in another terminal:",
        f"     PRAKERJA_DATABASE_URL={db} ./prakerja portal",
        "3. Open http://127.0.0.1:8780/ and sign in with one of these synthetic demo NIKs:",
        *(f"     {nik}   ({what})" for nik, what in people),
        "4. Read the code the gateway received, in a third terminal:",
        "     ./prakerja simulator-messages --last 1",
        "",
    ]
    guide.write_text("\n".join(lines), encoding="utf-8")
    click.echo(
        "\nwave 1 is announced on the registrant dashboard. To sign in as a demo registrant:\n"
        f"  ./prakerja simulator --seed {seed}        # terminal 1: partners + message gateway\n"
        f"  PRAKERJA_DATABASE_URL={db} ./prakerja portal   # terminal 2\n"
        "  open http://127.0.0.1:8780/ with a demo NIK listed in "
        f"{guide}\n"
        "  ./prakerja simulator-messages --last 1   # the sign-in code the gateway received"
    )


def _ui_url() -> str:
    return os.environ.get("PREFECT_API_URL", "").removesuffix("/").removesuffix("/api")


# ---------------------------------------------------------------- operations (Prefect)
def _prefect_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


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
        _refuse("ops setup needs a Prefect server: set PREFECT_API_URL (see README, Operations)")
    try:
        result = setup(webhook_url=webhook_url, block=block)
    except SetupError as exc:
        _refuse(str(exc))
    if as_json:
        click.echo(json.dumps(result))
        return
    b = result["block"]
    click.echo(f"notification block {b['name']}: {b['state']}")
    for name, state in result["automations"].items():
        click.echo(f"automation {name!r}: {state}")


if __name__ == "__main__":
    main()
