"""Partner rate limits shared by every process of the program, by default.

Each partner client paces itself in its process (partners.limits), and the worker
processes of one wave share one bucket in memory. That is not enough: two waves run at
once (a CLI run beside a deployment run, the overnight rollout beside a rerun), or the
workers of a Dask cluster, would each use the partner's whole `max_rps`. So every
request also takes a token from a bucket that every process shares (the run's
`Execution.partner_limits`, runtime/execution.py; `PRAKERJA_PARTNER_LIMITS` by default):

- `database` (the default): a token bucket per partner beside the program's data,
  which every process of the program necessarily shares. On PostgreSQL, one row per
  partner in the UNLOGGED table `prakerja_partner_rate`, taken by one atomic statement
  per request on the database's clock (hosts' clocks may differ): one round trip. On
  SQLite (one host by nature), a folder beside the database file
  (`<database>.partner-rates/`, one 16-byte file per partner) under a blocking file lock,
  on the host's clock: a few microseconds, and never waiting behind the database's one
  writer. A token costs nothing beside a request of up to 1,000 items.
- `prefect`: Prefect global rate limits (strict: a missing limit is an error, not a silent
  no-op), for a cluster whose processes share a Prefect server but not one database;
  also what `PRAKERJA_SHARED_RATE_LIMITS=1` (`wave run --shared-rate-limits`) selects.
- `process`: no sharing beyond the process (and its wave's worker processes), e.g. for a
  throwaway in-memory database.

One token per request (a batch of up to `batch_size` items), never per person. Each
caller reserves its token at once (the balance may go negative) and sleeps until it is
due, as partners.limits.RateLimiter does, so waiting callers never race.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from partners.config import PartnersConfig

MODES = ("database", "prefect", "process")
TABLE = "prakerja_partner_rate"


def limit_name(partner_id: str) -> str:
    return f"prakerja-partner-{partner_id}"


def ensure_partner_limits(config: PartnersConfig) -> list[str]:
    """Creates or updates one global rate limit per partner at its max_rps."""
    from prefect import get_client

    names = []
    with get_client(sync_client=True) as client:
        for p in config.every():
            client.upsert_global_concurrency_limit_by_name(
                limit_name(p.id),
                limit=max(1, math.ceil(p.max_rps)),
                slot_decay_per_second=float(p.max_rps),
            )
            names.append(limit_name(p.id))
    return names


def take_partner_slot(partner_id: str) -> None:
    from prefect.concurrency.sync import rate_limit

    rate_limit(limit_name(partner_id), occupy=1, strict=True)


def partner_pacer(
    engine: Engine, config: PartnersConfig, mode: str = "database"
) -> Callable[[str], None] | None:
    """What every partner request of this process calls first (partners.client's
    shared_pacer), by the run's partner limits (runtime/execution.py); None when nothing
    beyond the process."""
    if mode not in MODES:
        raise ValueError(f"partner limits must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "prefect":
        return take_partner_slot
    if mode == "process":
        return None
    return DatabaseRateLimits.for_engine(engine, config)


# ---------------------------------------------------------------- the database's buckets
# PostgreSQL, one statement: create the partner's bucket full (less this token) or refill
# it for the time elapsed (capped at its burst) and take one token; the new balance comes
# back. The row lock makes concurrent callers take turns; the clock is the database's.
# The stamp never goes back (a caller that read the clock before waiting for the row adds
# no time twice), unless the clock itself went back by more than 5 s (a stepped clock):
# then it restarts from there.
_POSTGRES_TAKE = f"""
INSERT INTO {TABLE} (partner, tokens, stamp)
VALUES (:partner, :burst - 1, extract(epoch from clock_timestamp()))
ON CONFLICT (partner) DO UPDATE SET
  tokens = LEAST(:burst, {TABLE}.tokens
           + GREATEST(0, excluded.stamp - {TABLE}.stamp) * :rate) - 1,
  stamp = CASE WHEN excluded.stamp < {TABLE}.stamp - 5 THEN excluded.stamp
          ELSE GREATEST(excluded.stamp, {TABLE}.stamp) END
RETURNING tokens
"""


class DatabaseRateLimits:
    """One token bucket per partner shared by every process using the same database."""

    def __init__(self, take: Callable[[dict], float], config: PartnersConfig) -> None:
        self._take = take
        self._buckets: dict[str, dict[str, Any]] = {
            p.id: {
                "partner": f"{p.id} {p.base_url}",
                "rate": float(p.max_rps),
                # As the client's own bucket: parallel callers may start together.
                "burst": max(1.0, min(float(p.max_concurrency), float(p.max_rps))),
            }
            for p in config.every()
        }

    @classmethod
    def for_engine(cls, engine: Engine, config: PartnersConfig) -> DatabaseRateLimits | None:
        if engine.dialect.name == "postgresql":
            return cls(_PostgresTaker(engine), config)
        if engine.dialect.name == "sqlite":
            path = engine.url.database
            if not path or path == ":memory:" or path.startswith("file:"):
                return None  # a database no other process can open
            return cls(_FileTaker(f"{Path(path).resolve()}.partner-rates"), config)
        raise ValueError(f"partner limits 'database': unsupported database {engine.dialect.name!r}")

    def __call__(self, partner_id: str) -> None:
        self.acquire(partner_id)

    def close(self) -> None:
        """Closes this process's connections to the buckets."""
        close = getattr(self._take, "close", None)
        if close is not None:
            close()

    def acquire(self, partner_id: str) -> float:
        """Takes one token of the partner's shared bucket, sleeping until it is due;
        returns the time waited."""
        bucket = self._buckets.get(partner_id)
        if bucket is None:
            raise KeyError(f"no rate limit for partner {partner_id!r}")
        tokens = self._take(bucket)
        wait = -tokens / bucket["rate"] if tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


class _PostgresTaker:
    """The buckets in an UNLOGGED table of the program database (no WAL, so no flush at
    commit; a crash empties it, and the buckets restart full), taken in autocommit on a
    small pool of its own: one round trip a request."""

    def __init__(self, engine: Engine) -> None:
        from sqlalchemy import create_engine

        self._engine = create_engine(
            # A token holds a connection for one round trip: a few serve a process's
            # threads (at most 8 connections, beside the program's own pool).
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=7,
        )
        for attempt in range(5):
            try:
                with self._engine.connect() as conn:
                    conn.exec_driver_sql(
                        f"CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} (partner TEXT PRIMARY "
                        "KEY, tokens DOUBLE PRECISION NOT NULL, stamp DOUBLE PRECISION NOT NULL)"
                    )
                break
            except SQLAlchemyError:  # another process created it at the same moment
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        self._statement = text(_POSTGRES_TAKE)

    def __call__(self, bucket: dict) -> float:
        from sqlalchemy.exc import DBAPIError

        for attempt in (1, 2):
            try:
                with self._engine.connect() as conn:
                    return float(conn.execute(self._statement, bucket).scalar_one())
            except DBAPIError as exc:
                # A pooled connection the server closed (restart): once more on a new one.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._engine.dispose()


class _FileTaker:
    """SQLite (one host): the buckets in a folder beside the database, one 16-byte file
    per partner (balance, stamp), read and written under an exclusive flock, a blocking
    kernel lock (SQLite's own lock would make waiting writers poll and sleep); within the
    process a thread lock too, since flock does not tell apart threads sharing a file."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._files: dict[str, tuple[int, threading.Lock]] = {}

    def _file(self, partner: str) -> tuple[int, threading.Lock]:
        with self._guard:
            found = self._files.get(partner)
            if found is None:
                name = hashlib.sha256(partner.encode()).hexdigest()[:32]
                fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o600)
                found = self._files[partner] = (fd, threading.Lock())
            return found

    def __call__(self, bucket: dict) -> float:
        fd, lock = self._file(bucket["partner"])
        rate, burst = bucket["rate"], bucket["burst"]
        with lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _STATE.size, 0)
                now = time.time()  # read holding the lock: no caller adds time twice
                if len(raw) == _STATE.size:
                    tokens, stamp = _STATE.unpack(raw)
                    if now < stamp - 5:  # the clock went back (see _TAKE): restart
                        stamp = now
                    tokens = min(burst, tokens + max(0.0, now - stamp) * rate)
                    stamp = max(now, stamp)
                else:
                    tokens, stamp = burst, now
                tokens -= 1.0
                os.pwrite(fd, _STATE.pack(tokens, stamp), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return tokens

    def close(self) -> None:
        with self._guard:
            files, self._files = self._files, {}
        for fd, _lock in files.values():
            os.close(fd)


_STATE = struct.Struct("<dd")
