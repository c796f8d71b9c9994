"""`prakerja db upgrade`: the program database's schema (docs/schema.md)."""

from __future__ import annotations

import sys

import click

from cli.root import (
    EXIT_ERROR,
    _database_failure,
    _refuse,
    _shown_database_url,
    log,
    main,
    settings,
)


@main.group()
def db() -> None:
    """The program database's schema (docs/schema.md)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Brings the program database (PRAKERJA_DATABASE_URL) to this release's schema."""
    from models.db import engine_for
    from models.schema import SchemaError, upgrade_database

    try:
        engine = engine_for(settings())
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
