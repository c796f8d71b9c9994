"""The `prakerja` command's root: the group, its exit codes, and what every command shares:
the process's settings (read once per command), its app (runtime/app.py, built once), and
one-line errors. One module per group of commands beside it: wave.py, simulator.py,
portal.py, demo.py, ops.py (audit, blacklist, serve, ops setup), db.py."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from models.config import Execution, Settings
    from partners.config import PartnersConfig
    from runtime.app import App

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_PENDING, EXIT_BUSY = 0, 1, 2, 3, 4
EXIT_SIGN_OFF = 5  # nothing pending; the wave waits for sign-off before any credit
log = logging.getLogger("prakerja")


def _setup_logging(verbose: bool = False) -> None:
    from runtime.log_masking import install_masking

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
    # (cli/stage_lines.py) and Prefect's warnings and errors, and all of it with -v.
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


def _refuse(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_REFUSED)


def settings() -> Settings:
    """The process's settings (models/config.py), read once per command: the root
    context holds them (the demo replaces them with its own database's)."""
    from models.config import SettingsEnvError, read_settings

    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    if root is not None and root.obj is not None:
        return root.obj
    try:
        got = read_settings()
    except SettingsEnvError as exc:
        _refuse(str(exc))
    if root is not None:
        root.obj = got
    return got


def use_settings(new: Settings) -> None:
    """Replaces the command's settings (the demo: its own database)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().obj = new


def _runtime(
    partners_config: PartnersConfig | None = None, execution: Execution | None = None
) -> App:
    """This process's app (runtime/app.py), built once from the command's settings: a
    database this code must not use is refused (exit 2), one that cannot be opened is one
    line (exit 1)."""
    from models.schema import SchemaError
    from runtime.app import build_app, install

    try:
        return install(build_app(settings(), partners_config=partners_config, execution=execution))
    except SchemaError as exc:  # older or newer than this code: `prakerja db upgrade`
        _refuse(str(exc))
    except Exception as exc:  # noqa: BLE001 - the database cannot be opened: one line
        log.debug("the program database cannot be opened", exc_info=True)
        click.echo(f"error: {_database_failure(exc)}", err=True)
        sys.exit(EXIT_ERROR)


def _shown_database_url() -> str:
    """PRAKERJA_DATABASE_URL as it can be printed: its password masked."""
    from sqlalchemy.engine import make_url

    url = settings().database_url
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


def _load_partners() -> PartnersConfig:
    from partners.config import ConfigError, load_partners_config

    try:
        return load_partners_config(settings().partners)
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
            log.debug("failure", exc_info=True)  # masked by runtime.log_masking.MaskingFilter
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


def _login_user() -> str:
    from tasks.audit import login_user

    return login_user()


def _by_option(f):
    return click.option(
        "--by",
        "by",
        default=None,
        help="Who does this, for the audit trail (default: the login user).",
    )(f)


def _rupiah(amount: int) -> str:
    from rules.money import rupiah

    return rupiah(amount)


def _progress(what: str, total: int):
    import time

    last = [0.0]

    def report(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2 or done >= total:
            last[0] = now
            click.echo(f"{what}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)", err=True)

    return report


def _prefect_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def verbose() -> bool:
    return _VERBOSE
