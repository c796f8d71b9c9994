"""Engine and sessions for the program database (SQLite by default, PostgreSQL in production)."""

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from models.config import DEFAULT_DATABASE_URL, read_settings

__all__ = ["DEFAULT_DATABASE_URL", "database_url", "init_db", "make_engine", "session_factory"]
log = logging.getLogger(__name__)
SessionFactory = Callable[[], Session]
SQLITE_CHECKPOINT_PAGES = 10_000  # about 40 MB of WAL between checkpoints


def database_url(env: Mapping[str, str] | None = None) -> str:
    """PRAKERJA_DATABASE_URL of `env` (default: this process's environment)."""
    return read_settings(env).database_url


def make_engine(
    url: str | None = None, *, sqlite_cache_mb: int = 32, sqlite_busy_timeout_s: float = 60.0
) -> Engine:
    """An engine for `url` (default: the environment's); SQLite gets WAL, a busy timeout
    (how long a write waits for another connection's lock) and its folder created; its page
    cache is per connection (KiB-sized pages are only allocated as they are used).

    `hide_parameters`: a database error's text never carries its statement's parameters
    (rows of names, NIKs, phones...), wherever it is logged or stored."""
    url = url or database_url()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        busy_s = sqlite_busy_timeout_s
        engine = create_engine(
            url,
            connect_args={"timeout": busy_s, "check_same_thread": False},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            # A bigger page cache than SQLite's 2 MB keeps a big wave's upper B-tree pages
            # in memory; a rarer checkpoint copies each hot page once instead of per batch.
            cur.execute(f"PRAGMA cache_size=-{sqlite_cache_mb * 1024}")
            cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
            cur.close()

        return engine
    return create_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True
    )


def init_db(engine: Engine) -> None:
    """Creates missing tables; safe when several processes open a new database at once."""
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            SQLModel.metadata.create_all(engine)
            _add_missing_columns(engine)
            _add_missing_indexes(engine)
            return
        except SQLAlchemyError:
            # Another process created a table between our check and our CREATE: look again.
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def _add_missing_columns(engine: Engine) -> None:
    """Adds nullable columns that later versions put on existing tables (create_all
    makes missing tables only): a database from an earlier version keeps working."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    for table in SQLModel.metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have or not column.nullable:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'
                )


def _add_missing_indexes(engine: Engine) -> None:
    """Creates the indexes that later versions put on existing tables (create_all makes
    the indexes of the tables it creates only), such as the ledger's one live credit per
    (NIK, benefit). IF NOT EXISTS, and a lost race is looked at again: several processes
    may open the database at once."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.schema import CreateIndex

    def existing() -> dict[str, set[str | None]]:  # reflected index names may be None
        inspector = inspect(engine)
        tables = set(inspector.get_table_names())
        return {
            t.name: {i["name"] for i in inspector.get_indexes(t.name)}
            for t in SQLModel.metadata.sorted_tables
            if t.name in tables
        }

    have = existing()
    for table in SQLModel.metadata.sorted_tables:
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name in have.get(table.name, set()):
                continue
            try:
                with engine.begin() as conn:
                    conn.execute(CreateIndex(index, if_not_exists=True))
            except IntegrityError:
                # Another process made it meanwhile (PostgreSQL), or the rows already break
                # a unique index: then say so (the error's text holds the rows' values, so it
                # is not repeated) and carry on; reconciliation reports what broke it.
                if index.name in existing().get(table.name, set()):
                    continue
                log.error(
                    "index %s cannot be created: existing %s rows break it; see "
                    "`prakerja wave reconcile`",
                    index.name,
                    table.name,
                )


def session_factory(engine: Engine) -> SessionFactory:
    def factory() -> Session:
        return Session(engine, expire_on_commit=False)

    return factory
