"""The dashboard's database side: a person's view, sign-in codes and limits, sessions.

Everything a limit counts lives in the database (table `login_guard`), so that it holds
across every portal process and machine. A guard row is keyed by a keyed hash of the NIK
(HMAC with the portal secret), never the NIK itself: the table also counts NIKs nobody
registered, and must not become a list of what strangers typed. Codes are stored only as
keyed hashes. Session cookies carry a random token; the database keeps its SHA-256.

Read-modify-write of a guard row is serialised per NIK: `BEGIN IMMEDIATE` on SQLite, a
row lock (`SELECT ... FOR UPDATE`) on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from models.config import Settings
from models.db import engine_for, init_db, make_engine

CODE_TTL_S = 5 * 60
WINDOW_S = 15 * 60
MAX_CODE_REQUESTS = 3  # per NIK in any WINDOW_S
MAX_WRONG_CODES = 5  # per NIK in any WINDOW_S, then locked for LOCKOUT_S
LOCKOUT_S = 15 * 60
SESSION_IDLE_S = 30 * 60
SESSION_TOUCH_S = 30  # last_seen is written at most this often per session
SWEEP_EVERY_S = 60  # per process: sessions and guard rows that can no longer matter
SWEEP_BATCH = 500  # rows deleted per write transaction
BENEFIT = "training"


@dataclass(frozen=True)
class WaveView:
    wave_id: int
    announced: bool
    message: str
    state: str | None
    reason: str | None
    pending_stage: str | None
    card_number: str | None
    credited_at: datetime | None
    applied_amount: int | None
    full_name: str | None = None  # shown to the person only, escaped


@dataclass(frozen=True)
class CodeRequest:
    allowed: bool
    retry_after: int
    code: str | None = None


@dataclass(frozen=True)
class Verification:
    ok: bool
    locked: bool
    retry_after: int = 0


def make_portal_engine(url: str, settings: Settings | None = None) -> Engine:
    """The dashboard's engine, from the program's one engine factory (models/db.py):
    autocommitted on SQLite (transactions are begun by hand: BEGIN IMMEDIATE for writes,
    below); parameters never in errors."""
    if settings is None:
        return make_engine(url, sqlite_busy_timeout_s=30.0, autocommit=True, pool_size=20)
    return engine_for(settings, url, portal=True)


def _times(csv: str, since: float) -> list[float]:
    return [float(t) for t in csv.split(",") if t and float(t) > since]


def _csv(times: list[float]) -> str:
    return ",".join(f"{t:.3f}" for t in times)


class Store:
    def __init__(self, engine: Engine, secret: bytes, *, clock=time.time) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self._secret = secret
        self._clock = clock
        self._write_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0
        init_db(engine)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ hashing
    def nik_key(self, nik: str) -> str:
        return hmac.new(self._secret, b"nik:" + nik.encode(), hashlib.sha256).hexdigest()

    def _code_hash(self, key: str, code: str) -> str:
        return hmac.new(self._secret, f"code:{key}:{code}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _token_hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One serialised write transaction (SQLite: BEGIN IMMEDIATE)."""
        if not self.sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        # Threads of this process queue here for SQLite's one write lock rather than in
        # SQLite's busy handler, which sleeps 1, 2, 5 ... 100 ms between tries: under load
        # those sleeps, not the writes, set how many sign-ins a second one process admits.
        with self._write_lock, self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def _write_one(self, sql: str, params: dict) -> None:
        """One write statement, a transaction by itself: on SQLite without the BEGIN and
        COMMIT round trips `_write` makes while holding the database's write lock."""
        if not self.sqlite:
            with self.engine.begin() as conn:
                conn.execute(text(sql), params)
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.execute(text(sql), params)  # autocommit: its own transaction

    def _guard_row(self, conn: Connection, key: str, now: float):
        conn.execute(
            text(
                "INSERT INTO login_guard (key, requests, failures, locked_until, code_expires, "
                "updated_at) VALUES (:k, '', '', 0, 0, :now) ON CONFLICT (key) DO NOTHING"
            ),
            {"k": key, "now": now},
        )
        lock = "" if self.sqlite else " FOR UPDATE"
        return conn.execute(
            text(
                "SELECT requests, failures, locked_until, code_hash, code_expires "
                "FROM login_guard WHERE key = :k" + lock
            ),
            {"k": key},
        ).one()

    # ------------------------------------------------------------------ reads
    def is_registered_phone(self, nik: str) -> tuple[bool, str | None]:
        """(registered, phone of the row in the most recent wave that has one)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT r.phone FROM portal_person p JOIN registrant r "
                    "ON r.id = p.registrant_id WHERE p.nik = :nik ORDER BY p.wave_id DESC"
                ),
                {"nik": nik},
            ).all()
        phone = next((r.phone for r in rows if r.phone and r.phone.strip()), None)
        return bool(rows), phone

    def person_view(self, nik: str) -> list[WaveView]:
        """Every wave the NIK has a row in, ascending: one range scan of portal_person."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT p.wave_id, w.announced_at, w.announce_message, r.state, r.reason, "
                    "r.pending_stage, r.card_number, r.credited_at, l.amount, l.status, "
                    "r.full_name "
                    "FROM portal_person p "
                    "JOIN wave w ON w.wave_id = p.wave_id "
                    "JOIN registrant r ON r.id = p.registrant_id "
                    "LEFT JOIN ledger l ON l.wave_id = p.wave_id AND l.nik = p.nik "
                    "AND l.benefit = :benefit "
                    "WHERE p.nik = :nik ORDER BY p.wave_id"
                ),
                {"nik": nik, "benefit": BENEFIT},
            ).all()
        views = []
        for r in rows:
            announced = r.announced_at is not None
            if not announced:  # the embargo: nothing of the wave leaves this function
                views.append(
                    WaveView(r.wave_id, False, "", None, None, None, None, None, None, r.full_name)
                )
                continue
            views.append(
                WaveView(
                    wave_id=r.wave_id,
                    announced=True,
                    message=r.announce_message or "",
                    state=r.state,
                    reason=r.reason,
                    pending_stage=r.pending_stage,
                    card_number=r.card_number,
                    credited_at=_as_datetime(r.credited_at),
                    applied_amount=int(r.amount) if r.status == "APPLIED" else None,
                    full_name=r.full_name,
                )
            )
        return views

    # ------------------------------------------------------------------ sign-in
    def request_code(self, nik: str) -> CodeRequest:
        """Counts a code request for the NIK; when allowed, a new code voids the old one."""
        key = self.nik_key(nik)
        now = self._clock()
        code = f"{secrets.randbelow(1_000_000):06d}"
        with self._write() as conn:
            row = self._guard_row(conn, key, now)
            recent = _times(row.requests, now - WINDOW_S)
            if len(recent) >= MAX_CODE_REQUESTS:
                retry = int(recent[0] + WINDOW_S - now) + 1
                return CodeRequest(False, max(retry, 1))
            recent.append(now)
            conn.execute(
                text(
                    "UPDATE login_guard SET requests = :r, code_hash = :h, code_expires = :e, "
                    "updated_at = :now WHERE key = :k"
                ),
                {
                    "r": _csv(recent),
                    "h": self._code_hash(key, code),
                    "e": now + CODE_TTL_S,
                    "now": now,
                    "k": key,
                },
            )
        self._sweep(now)
        return CodeRequest(True, 0, code)

    def verify_code(self, nik: str, code: str) -> Verification:
        """A right, unexpired, unused code signs in (and is used up); wrong ones count."""
        key = self.nik_key(nik)
        now = self._clock()
        with self._write() as conn:
            row = self._guard_row(conn, key, now)
            if row.locked_until > now:
                return Verification(False, True, int(row.locked_until - now) + 1)
            right = (
                row.code_hash is not None
                and row.code_expires > now
                and len(code) == 6
                and code.isascii()
                and code.isdigit()
                and hmac.compare_digest(row.code_hash, self._code_hash(key, code))
            )
            if right:
                conn.execute(
                    text(
                        "UPDATE login_guard SET code_hash = NULL, code_expires = 0, "
                        "failures = '', updated_at = :now WHERE key = :k"
                    ),
                    {"now": now, "k": key},
                )
                return Verification(True, False)
            failures = _times(row.failures, now - WINDOW_S)
            failures.append(now)
            if len(failures) >= MAX_WRONG_CODES:
                # Locked: every code of the NIK is void, and so are the counted failures.
                conn.execute(
                    text(
                        "UPDATE login_guard SET failures = '', locked_until = :until, "
                        "code_hash = NULL, code_expires = 0, updated_at = :now WHERE key = :k"
                    ),
                    {"until": now + LOCKOUT_S, "now": now, "k": key},
                )
            else:
                conn.execute(
                    text("UPDATE login_guard SET failures = :f, updated_at = :now WHERE key = :k"),
                    {"f": _csv(failures), "now": now, "k": key},
                )
            return Verification(False, False)

    # ------------------------------------------------------------------ sessions
    def create_session(self, nik: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self._write_one(
            "INSERT INTO portal_session (token_hash, nik, created_at, last_seen) "
            "VALUES (:t, :nik, :now, :now)",
            {"t": self._token_hash(token), "nik": nik, "now": now},
        )
        return token

    def _session_row(self, token: str | None):
        if not token or len(token) > 100:
            return None
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT nik, last_seen FROM portal_session WHERE token_hash = :t"),
                {"t": self._token_hash(token)},
            ).first()

    def session_nik_without_write(self, token: str | None) -> tuple[bool, str | None]:
        """`session_nik` when it would write nothing: (True, the NIK or None). (False,
        None) when the session is due a write (its last_seen moved, or its end): then
        `session_nik` is the answer. Reads only, so it may run on an event loop."""
        row = self._session_row(token)
        if row is None:
            return True, None
        if self._clock() - row.last_seen >= SESSION_TOUCH_S:
            return False, None
        return True, row.nik

    def session_nik(self, token: str | None) -> str | None:
        """The NIK of a live session; a session idle for 30 minutes is ended."""
        row = self._session_row(token)
        if row is None or token is None:
            return None
        th = self._token_hash(token)
        now = self._clock()
        if now - row.last_seen >= SESSION_IDLE_S:
            self.end_session(token)
            return None
        if now - row.last_seen >= SESSION_TOUCH_S:
            self._write_one(
                "UPDATE portal_session SET last_seen = :now WHERE token_hash = :t",
                {"now": now, "t": th},
            )
        return row.nik

    def end_session(self, token: str | None) -> None:
        if not token or len(token) > 100:
            return
        self._write_one(
            "DELETE FROM portal_session WHERE token_hash = :t", {"t": self._token_hash(token)}
        )

    def _sweep(self, now: float) -> None:
        """Now and then (once a minute per process), drops sessions and guard rows that
        can no longer matter.

        Neither table has an index over its times, so finding them is a scan: about 0.1 s
        at announcement morning's million sessions. It is done as a read, which waits for
        nobody and holds up nobody, and only the rows found are deleted, by key, a batch
        to a write, each row checked again as it goes (a session touched meanwhile stays).
        Inside one write, at 1% of code requests as it was, it held up every sign-in.
        """
        with self._sweep_lock:
            if now < self._next_sweep:
                return
            self._next_sweep = now + SWEEP_EVERY_S
        self._delete_found(
            "SELECT token_hash FROM portal_session WHERE last_seen < :t",
            "DELETE FROM portal_session WHERE last_seen < :t AND token_hash IN ",
            {"t": now - SESSION_IDLE_S},
        )
        self._delete_found(
            "SELECT key FROM login_guard WHERE updated_at < :t AND locked_until < :now",
            "DELETE FROM login_guard WHERE updated_at < :t AND locked_until < :now AND key IN ",
            {"t": now - WINDOW_S - CODE_TTL_S, "now": now},
        )

    def _delete_found(self, find: str, delete: str, params: dict) -> None:
        with self.engine.connect() as conn:
            keys = conn.execute(text(find), params).scalars().all()
        for start in range(0, len(keys), SWEEP_BATCH):
            batch = keys[start : start + SWEEP_BATCH]
            names = [f"k{i}" for i in range(len(batch))]
            with self._write() as conn:
                conn.execute(
                    text(delete + "(" + ", ".join(f":{n}" for n in names) + ")"),
                    {**params, **dict(zip(names, batch, strict=True))},
                )


def _as_datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))  # SQLite hands text back through text()
