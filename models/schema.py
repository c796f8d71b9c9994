"""The program database's schema revision: Alembic's migrations (models/migrations/) run
from code, and the check every command makes before it touches a wave.

A database outlives releases. `upgrade_database` brings one to this code's revision
(`prakerja db upgrade`); `check_database` refuses one that is older (or newer) than the
code. A new, empty database is made at the code's revision on first use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE_COMMAND = "prakerja db upgrade"
# Tables in the program database that are not the program's schema: Alembic's own, and the
# partner buckets' (partners/shared_limits.py makes it when first needed, UNLOGGED).
# Alembic's record of the revision, under the program's own name: a PostgreSQL database
# shared with Prefect's server holds Prefect's `alembic_version` already.
VERSION_TABLE = "prakerja_schema_version"
NOT_SCHEMA = frozenset({VERSION_TABLE, "prakerja_partner_rate"})
# Any fixed number: the PostgreSQL advisory lock held while the schema is changed.
_PG_LOCK = 0x70726B6A  # "prkj"


class SchemaError(RuntimeError):
    """The program database's schema is not the one this code was written for."""


class SchemaOutdatedError(SchemaError):
    """The database is older than the code: `prakerja db upgrade` brings it up."""


class SchemaNewerError(SchemaError):
    """The database was upgraded by a newer release than this code."""


@dataclass(frozen=True)
class Upgrade:
    before: tuple[str, ...]  # () = no revision: empty, or made before migrations
    after: tuple[str, ...]
    created: bool  # the database was empty: every table is new

    @property
    def changed(self) -> bool:
        return self.before != self.after


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """What Alembic compares with the metadata: the program's tables, not NOT_SCHEMA nor
    another application's in a shared database (Prefect's)."""
    if type_ == "table" and reflected and compare_to is None:
        from sqlmodel import SQLModel

        return name in SQLModel.metadata.tables
    return not (type_ == "table" and name in NOT_SCHEMA)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration without an ini file: this package's migrations, and either
    an open connection or a database `url` (the settings' database_url)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # ConfigParser reads '%' as interpolation: a password may hold one.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def code_heads() -> tuple[str, ...]:
    """The revisions this code's schema is at (one, unless two branches are unmerged)."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def database_heads(conn: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return tuple(sorted(context.get_current_heads()))


def _has_program_tables(conn: Connection) -> bool:
    """Whether any table the program has ever had is there (other applications' tables,
    such as Prefect's in a shared database, do not count)."""
    from sqlmodel import SQLModel

    import models.tables  # noqa: F401

    return bool(set(inspect(conn).get_table_names()) & set(SQLModel.metadata.tables))


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def problem(conn: Connection) -> SchemaError | None:
    """Why this code must not use the database, or None when it is at the code's revision.
    An empty database is no problem: `init_db` makes it at the code's revision."""
    heads = database_heads(conn)
    if heads == code_heads():
        return None
    if not heads:
        if not _has_program_tables(conn):
            return None
        return SchemaOutdatedError(
            "the program database was made by a release before schema revisions (it has "
            f"tables but no {VERSION_TABLE}): run `{UPGRADE_COMMAND}` (back it up first)"
        )
    unknown = [h for h in heads if not _known(h)]
    if unknown:
        return SchemaNewerError(
            f"the program database is at schema revision {', '.join(unknown)}, which this "
            f"release does not know (its newest is {', '.join(code_heads())}): a newer "
            "release upgraded it; run that release or a later one"
        )
    return SchemaOutdatedError(
        f"the program database is at schema revision {', '.join(heads)}, older than this "
        f"release's {', '.join(code_heads())}: run `{UPGRADE_COMMAND}` (back it up first)"
    )


def check_database(engine: Engine) -> None:
    """Raises SchemaOutdatedError or SchemaNewerError unless the database is at the code's
    revision (or empty)."""
    with engine.connect() as conn:
        found = problem(conn)
    if found is not None:
        raise found


def upgrade_database(engine: Engine, *, only_if_empty: bool = False) -> Upgrade:
    """Runs the migrations still to run, under a lock, in one transaction: several
    processes may call it at once (one migrates, the others then find nothing to do),
    and a failed migration leaves the database as it was (PostgreSQL and SQLite both
    change tables in transactions). A database made before migrations (tables, no
    revision) is brought to the baseline by the baseline itself.

    `only_if_empty`: make a new database only; any other that is not at the code's
    revision raises its SchemaError (what `init_db` does on first use)."""
    from alembic import command

    with _migration_lock(engine) as conn:
        before = database_heads(conn)
        created = not before and not _has_program_tables(conn)
        if only_if_empty and not created:
            found = problem(conn)
            if found is not None:
                raise found
            return Upgrade(before, before, False)
        found = problem(conn)
        if isinstance(found, SchemaNewerError):
            raise found
        if found is not None or created:
            command.upgrade(alembic_config(conn), "heads")
        after = database_heads(conn)
        if conn.dialect.name == "sqlite":
            _check_foreign_keys(conn)
    return Upgrade(before, after, created)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that only one process at a time holds; committed at
    the end of the block, rolled back if it raises."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Off for the copy-and-rename of batch migrations (a table's rows are moved,
            # not deleted); checked again before commit. Only settable outside a transaction.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
            try:
                # The write lock now: a second process waits here (busy timeout), not
                # between its reads and its writes.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
        else:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
                yield conn


def _check_foreign_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise SchemaError(f"the migration broke foreign keys of {', '.join(tables)}: undone")
