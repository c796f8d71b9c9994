"""Engine and sessions for the program database (SQLite by default, PostgreSQL in production)."""

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from models.config import DEFAULT_DATABASE_URL, Settings, read_settings

__all__ = [
    "DEFAULT_DATABASE_URL",
    "database_url",
    "engine_for",
    "init_db",
    "make_engine",
    "session_factory",
]
log = logging.getLogger(__name__)
SessionFactory = Callable[[], Session]
SQLITE_CHECKPOINT_PAGES = 10_000  # about 40 MB of WAL between checkpoints
SQLITE_SORT_THREADS = 2  # helper threads of a big sort (PRAGMA threads)
# Page caches of all of a process's SQLite connections together, at most (PRAGMA
# soft_heap_limit, process-wide): each connection's cache may grow to its cache_size, but
# a flow's process with a pool of twenty connections would otherwise keep 20 x 32 MB of
# a six-million database's pages (with the bound, the 6M wave's RSS: 1,129 -> 1,076 MB).
SQLITE_SOFT_HEAP_BYTES = 256 * 1024 * 1024


DASHBOARD_THREADS = 40  # anyio's default thread pool: the dashboard's blocking calls


def database_url(env: Mapping[str, str] | None = None) -> str:
    """PRAKERJA_DATABASE_URL of `env` (default: this process's environment)."""
    return read_settings(env).database_url


def make_engine(
    url: str,
    *,
    sqlite_cache_mb: int = 32,
    sqlite_busy_timeout_s: float = 60.0,
    autocommit: bool = False,
    pool_size: int = 10,
    point_reads: bool = False,
) -> Engine:
    """The one engine factory of the program (runs, workers and the dashboard alike): an
    engine for `url` (the settings' database_url); SQLite gets WAL, a busy timeout (how
    long a write waits for another connection's lock) and its folder created; its page
    cache is per connection (KiB-sized pages are only allocated as they are used).
    `autocommit` (the dashboard's SQLite engine): transactions are begun by hand.

    `hide_parameters`: a database error's text never carries its statement's parameters
    (rows of names, NIKs, phones...), wherever it is logged or stored."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        busy_s = sqlite_busy_timeout_s
        options: dict = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
        if pool_size != 10:
            options.update(pool_size=pool_size, max_overflow=pool_size)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_s, "check_same_thread": False},
            hide_parameters=True,
            **options,
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
            # A sort too big for memory (intake's two sorts of every NIK, the draw's pool)
            # merges its runs on helper threads: 21 -> 15 s and 16.5 -> 13.6 s at six
            # million rows. Small sorts never spill, so never start a thread.
            cur.execute(f"PRAGMA threads={SQLITE_SORT_THREADS}")
            cur.execute(f"PRAGMA soft_heap_limit={SQLITE_SOFT_HEAP_BYTES}")
            cur.close()

        return engine
    # `point_reads` (the dashboard): PostgreSQL plans a person's few-row lookups without
    # JIT compilation or parallel workers. Either one, chosen on a misestimate (fresh
    # statistics are not always there right after a big insert), cost 40-200 ms a read
    # where the lookup itself takes under a millisecond: 44 reads/s at six million rows.
    if point_reads:
        # The dashboard's pool holds as many connections as a worker's thread pool runs
        # requests (anyio's 40): with 20 + 20 overflow, overflow connections were opened
        # and closed per request under load (690 connections in 30 s of reads). No ping
        # before each use (a round trip per request): a connection the server dropped
        # fails one request, and SQLAlchemy then renews the whole pool.
        return create_engine(
            url,
            pool_size=max(pool_size, DASHBOARD_THREADS),
            max_overflow=10,
            pool_pre_ping=False,
            pool_recycle=1800,
            hide_parameters=True,
            connect_args={"options": "-c jit=off -c max_parallel_workers_per_gather=0"},
        )
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
    )


def engine_for(settings: Settings, url: str | None = None, *, portal: bool = False) -> Engine:
    """The program database's engine as the settings tune it (`url`, else
    settings.database_url). `portal`: the dashboard's engine: short autocommitted reads
    and hand-begun writes, a larger pool for its concurrent requests, and a shorter wait
    for a lock (a person waits on the other end)."""
    if portal:
        return make_engine(
            url or settings.database_url,
            sqlite_cache_mb=settings.sqlite_cache_mb,
            sqlite_busy_timeout_s=min(30.0, settings.sqlite_busy_timeout_s),
            autocommit=True,
            pool_size=20,
            point_reads=True,
        )
    return make_engine(
        url or settings.database_url,
        sqlite_cache_mb=settings.sqlite_cache_mb,
        sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
    )


def init_db(engine: Engine) -> None:
    """Opens the program database for this code: a new, empty one is made at the code's
    schema revision (safe when several processes do it at once); one at another revision
    raises models.schema.SchemaOutdatedError (run `prakerja db upgrade`) or
    SchemaNewerError. Every command, flow and the dashboard open it through here."""
    from models.schema import code_heads, database_heads, upgrade_database

    with engine.connect() as conn:
        if database_heads(conn) == code_heads():
            return
    upgrade_database(engine, only_if_empty=True)


def session_factory(engine: Engine) -> SessionFactory:
    def factory() -> Session:
        return Session(engine, expire_on_commit=False)

    return factory
