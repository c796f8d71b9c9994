"""The dashboard's database side: a person's view, sign-in codes and limits, sessions.

Everything a limit counts lives in the database (table `login_guard`), so that it holds
across every portal process and machine. A guard row is keyed by a keyed hash of the NIK
(HMAC with the portal secret), never the NIK itself: the table also counts NIKs nobody
registered, and must not become a list of what strangers typed. Codes are stored only as
keyed hashes. Session cookies carry a random token; the database keeps its SHA-256.

Read-modify-write of a guard row is serialised per NIK: `BEGIN IMMEDIATE` on SQLite, a
row lock (`SELECT ... FOR UPDATE`) on PostgreSQL.

Under attack (portal.md, "Behind a proxy, and under attack"): besides the 15-minute
limits, 10 code requests and 20 wrong codes per NIK in any 24 hours; wrong codes across
all NIKs are counted per minute (each process adds its count every second), and above
the alert threshold one process claims the alert (at most once per 10 minutes for all of
them) and raises it, off the request path.
Expired sessions and guard rows are swept through indexes over their times, a bounded
batch to a write, on a thread of their own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from models import names
from models.config import Settings
from models.db import engine_for, init_db, make_engine
from portal import lifecycle

log = logging.getLogger("prakerja.portal")
CODE_TTL_S = 5 * 60
WINDOW_S = 15 * 60
DAY_S = 24 * 3600
MAX_CODE_REQUESTS = 3  # per NIK in any WINDOW_S
MAX_CODE_REQUESTS_DAY = 10  # per NIK in any DAY_S
MAX_WRONG_CODES = 5  # per NIK in any WINDOW_S, then locked for LOCKOUT_S
MAX_WRONG_CODES_DAY = 20  # per NIK in any DAY_S, then locked until the oldest is a day old
# No wrong code is counted while a NIK is locked, and the lock lasts as long as the window:
# once it ends, the failures that caused it are out of the window by themselves, though
# the day's list keeps them.
LOCKOUT_S = WINDOW_S
SESSION_IDLE_S = 30 * 60
SESSION_MAX_S = 12 * 3600  # after sign-in, whatever the activity
SESSION_TOUCH_S = 30  # last_seen is written at most this often per session
SWEEP_EVERY_S = 60  # per process: sessions and guard rows that can no longer matter
SWEEP_BATCH = 500  # rows deleted per write transaction
GUESS_MINUTES_KEPT = 60  # per-minute counts of wrong codes, for a look after an alert
GUESS_ALERT_QUIET_S = 10 * 60  # the guessing alert, at most once per this across processes
GUESS_FLUSH_S = 1.0  # a process's count of wrong codes reaches the database this often
GUESS_ALERT = names.PORTAL_GUESSING  # its row in portal_alert
SECRET_ROW = 1
BENEFIT = "training"
CREDITED = "CREDITED"  # the registrant state whose entries carry a lifecycle
# A person's view: every wave the NIK has a row in, with a credited wave's ledger row,
# participant and lifecycle settings (portal/lifecycle.py).
PERSON_SQL = (
    "SELECT p.wave_id, w.announced_at, w.announce_message, r.state, r.reason, "
    "r.pending_stage, r.card_number, r.credited_at, l.amount, l.status, "
    f"r.full_name, p.registrant_id, {lifecycle.PERSON_COLUMNS} "
    "FROM portal_person p "
    "JOIN wave w ON w.wave_id = p.wave_id "
    "JOIN registrant r ON r.id = p.registrant_id "
    "LEFT JOIN ledger l ON l.wave_id = p.wave_id AND l.nik = p.nik "
    "AND l.benefit = :benefit "
    "LEFT JOIN participant pa ON pa.registrant_id = p.registrant_id "
    "WHERE p.nik = :nik ORDER BY p.wave_id"
)


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
    registrant_id: int | None = None
    # The `lifecycle` of a CREDITED entry (portal/lifecycle.py), read with the view.
    lifecycle: dict | None = None
    survey_amount: int | None = None  # the wave's, for the survey page


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


@dataclass(frozen=True)
class Guessing:
    """What the guessing alert says: counts only, never a NIK or a key."""

    failures: int  # wrong codes across all NIKs in the minute
    threshold: int
    minute_start: float  # Unix seconds

    def payload(self) -> dict:
        return {
            "failures_in_minute": self.failures,
            "threshold": self.threshold,
            "minute_start": datetime.fromtimestamp(self.minute_start, UTC).isoformat(),
            "quiet_minutes": GUESS_ALERT_QUIET_S // 60,
        }


# The sweep's statements: each finds at most SWEEP_BATCH rows through the index named
# beside it (tests EXPLAIN them) and deletes them by key, checking the row again as it
# goes (a session touched meanwhile stays). Run until a batch comes back short. A session
# 12 hours old needs no statement of its own: its next request ends it, and without one
# it is idle, and swept, 30 minutes after its last.
SWEEPS: tuple[tuple[str, str], ...] = (
    (
        "DELETE FROM portal_session WHERE last_seen < :idle AND token_hash IN "
        "(SELECT token_hash FROM portal_session WHERE last_seen < :idle LIMIT :batch)",
        "ix_portal_session_last_seen",
    ),
    (
        "DELETE FROM login_guard WHERE updated_at < :quiet AND locked_until < :now AND key IN "
        "(SELECT key FROM login_guard WHERE updated_at < :quiet AND locked_until < :now "
        "LIMIT :batch)",
        "ix_login_guard_updated_at",
    ),
    # A row a minute: an hour's worth at most, found through the primary key.
    ("DELETE FROM portal_guess_minute WHERE minute < :minute", "PRIMARY KEY"),
)


def sweep_params(now: float) -> dict:
    """What each sweep statement compares with at `now`: a guard row goes a day (and a
    code's life) after its last change, when its every time is out of every window and
    any lock has ended (a lock ends at most a day after the failure that set it)."""
    return {
        "idle": now - SESSION_IDLE_S,
        "quiet": now - DAY_S - CODE_TTL_S,
        "now": now,
        "minute": int(now // 60) - GUESS_MINUTES_KEPT,
        "batch": SWEEP_BATCH,
    }


def stored_secret(engine: Engine) -> bytes:
    """The portal's secret kept in the program database, made by whoever asks first: every
    process and every restart without PRAKERJA_PORTAL_SECRET shares it. Several asking at
    once agree: the first insert wins, the others insert nothing and read it."""
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO portal_secret (id, secret, created_at) VALUES (:id, :s, :now) "
                "ON CONFLICT (id) DO NOTHING"
            ),
            {"id": SECRET_ROW, "s": secrets.token_urlsafe(48), "now": time.time()},
        )
        kept = conn.execute(
            text("SELECT secret FROM portal_secret WHERE id = :id"), {"id": SECRET_ROW}
        ).scalar_one()
    return str(kept).encode()


def make_portal_engine(url: str, settings: Settings | None = None) -> Engine:
    """The dashboard's engine, from the program's one engine factory (models/db.py):
    autocommitted on SQLite (transactions are begun by hand: BEGIN IMMEDIATE for writes,
    below); parameters never in errors."""
    if settings is None:
        return make_engine(
            url, sqlite_busy_timeout_s=30.0, autocommit=True, pool_size=20, point_reads=True
        )
    return engine_for(settings, url, portal=True)


def _times(csv: str, since: float) -> list[float]:
    return [float(t) for t in csv.split(",") if t and float(t) > since]


def _csv(times: list[float]) -> str:
    return ",".join(f"{t:.3f}" for t in times)


class Store:
    def __init__(
        self,
        engine: Engine,
        secret: bytes,
        *,
        clock=time.time,
        guess_alert: int = 300,
        on_guessing: Callable[[Guessing], None] | None = None,
    ) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self._secret = secret
        self._clock = clock
        self._write_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0
        self._sweeper: threading.Thread | None = None
        self._guess_alert = guess_alert
        self._on_guessing = on_guessing
        self._alert_lock = threading.Lock()
        self._failures: dict[int, int] = {}  # wrong codes by minute, not yet in the database
        self._flusher: threading.Timer | None = None
        self._next_alert_claim = 0.0
        init_db(engine)

    def close(self) -> None:
        with self._alert_lock:
            flusher = self._flusher
        if flusher is not None:
            flusher.cancel()
            self.flush_failures()
        if self._sweeper is not None:
            self._sweeper.join(10)
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
            rows = lifecycle.rows_of(conn, PERSON_SQL, {"nik": nik, "benefit": BENEFIT})
            # A credited wave's lifecycle: its participant row and the wave's settings came
            # with the rows above; payments and survey answers are one more read.
            credited = [
                lifecycle.Credited(r.registrant_id, r.wave_id, _as_datetime(r.credited_at), r, r)
                for r in rows
                if r.announced_at is not None and r.state == CREDITED
            ]
            lifecycles = lifecycle.read(conn, credited)
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
                    registrant_id=r.registrant_id,
                    lifecycle=lifecycles[r.registrant_id][0]
                    if r.registrant_id in lifecycles
                    else None,
                    survey_amount=lifecycles[r.registrant_id][1]
                    if r.registrant_id in lifecycles
                    else None,
                )
            )
        return views

    def answer_survey(self, registrant_id: int, k: int, answers: dict) -> bool:
        """Stores a participant's answers to survey k once (False: answered before)."""
        with self._write() as conn:
            return lifecycle.store_answer(conn, registrant_id, k, answers)

    # ------------------------------------------------------------------ sign-in
    def request_code(self, nik: str) -> CodeRequest:
        """Counts a code request for the NIK; when allowed, a new code voids the old one."""
        key = self.nik_key(nik)
        now = self._clock()
        code = f"{secrets.randbelow(1_000_000):06d}"
        with self._write() as conn:
            row = self._guard_row(conn, key, now)
            day = _times(row.requests, now - DAY_S)
            recent = [t for t in day if t > now - WINDOW_S]
            free_at = 0.0  # when the NIK may ask again, if it may not now
            if len(recent) >= MAX_CODE_REQUESTS:
                free_at = recent[-MAX_CODE_REQUESTS] + WINDOW_S
            if len(day) >= MAX_CODE_REQUESTS_DAY:
                free_at = max(free_at, day[-MAX_CODE_REQUESTS_DAY] + DAY_S)
            if free_at:
                return CodeRequest(False, max(int(free_at - now) + 1, 1))
            day.append(now)
            conn.execute(
                text(
                    "UPDATE login_guard SET requests = :r, code_hash = :h, code_expires = :e, "
                    "updated_at = :now WHERE key = :k"
                ),
                {
                    "r": _csv(day[-MAX_CODE_REQUESTS_DAY:]),
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
                # The wrong codes before it still count: portal.md limits wrong codes "in
                # any 15 minutes" and "in any 24 hours", whatever came between.
                conn.execute(
                    text(
                        "UPDATE login_guard SET code_hash = NULL, code_expires = 0, "
                        "updated_at = :now WHERE key = :k"
                    ),
                    {"now": now, "k": key},
                )
                return Verification(True, False)
            day = _times(row.failures, now - DAY_S)
            day.append(now)
            recent = [t for t in day if t > now - WINDOW_S]
            until = 0.0
            if len(recent) >= MAX_WRONG_CODES:
                until = now + LOCKOUT_S
            if len(day) >= MAX_WRONG_CODES_DAY:
                until = max(until, day[-MAX_WRONG_CODES_DAY] + DAY_S)
            if until:
                # Locked: every code of the NIK is void.
                conn.execute(
                    text(
                        "UPDATE login_guard SET failures = :f, locked_until = :until, "
                        "code_hash = NULL, code_expires = 0, updated_at = :now WHERE key = :k"
                    ),
                    {"f": _csv(day[-MAX_WRONG_CODES_DAY:]), "until": until, "now": now, "k": key},
                )
            else:
                conn.execute(
                    text("UPDATE login_guard SET failures = :f, updated_at = :now WHERE key = :k"),
                    {"f": _csv(day[-MAX_WRONG_CODES_DAY:]), "now": now, "k": key},
                )
        self._count_failure(now)
        self._sweep(now)
        return Verification(False, False)

    # ------------------------------------------------------------------ the guessing alert
    def _count_failure(self, now: float) -> None:
        """Counts a wrong code in this process; a thread adds the counts to the database's
        per-minute row within GUESS_FLUSH_S. Not in the verify's transaction: that row is
        every process's, and under attack each wrong code would queue on its lock."""
        with self._alert_lock:
            minute = int(now // 60)
            self._failures[minute] = self._failures.get(minute, 0) + 1
            if self._flusher is None:
                self._flusher = threading.Timer(GUESS_FLUSH_S, self.flush_failures)
                self._flusher.daemon = True
                self._flusher.start()

    def flush_failures(self) -> None:
        """Adds this process's wrong codes to every process's count of their minute; above
        the threshold, claims the alert for all of them (a conditional UPDATE: one claim
        wins in GUESS_ALERT_QUIET_S) and, when it wins, raises it."""
        with self._alert_lock:
            pending, self._failures, self._flusher = self._failures, {}, None
        try:
            for minute, n in sorted(pending.items()):
                with self._write() as conn:
                    total = conn.execute(
                        text(
                            "INSERT INTO portal_guess_minute (minute, failures) VALUES (:m, :n) "
                            "ON CONFLICT (minute) DO UPDATE "
                            "SET failures = portal_guess_minute.failures + :n RETURNING failures"
                        ),
                        {"m": minute, "n": n},
                    ).scalar_one()
                if total > self._guess_alert and self._may_claim():
                    now = self._clock()
                    if self.claim_alert(GUESS_ALERT, now, GUESS_ALERT_QUIET_S):
                        guessing = Guessing(total, self._guess_alert, minute * 60.0)
                        if self._on_guessing is not None:
                            self._on_guessing(guessing)
        except Exception as exc:  # an alert that cannot be raised must not stop sign-ins
            log.warning("portal: counting wrong codes failed: %s", type(exc).__name__)

    def _may_claim(self) -> bool:
        """At most one claim a minute per process: another process may hold the alert."""
        now = self._clock()
        with self._alert_lock:
            if now < self._next_alert_claim:
                return False
            self._next_alert_claim = now + 60
            return True

    def claim_alert(self, name: str, now: float, quiet_s: float) -> bool:
        """True for the one caller (of every process) that may raise alert `name` now: the
        last one was raised at least `quiet_s` ago."""
        with self._write() as conn:
            conn.execute(
                text(
                    "INSERT INTO portal_alert (name, raised_at) VALUES (:n, 0) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                {"n": name},
            )
            claimed = conn.execute(
                text(
                    "UPDATE portal_alert SET raised_at = :now "
                    "WHERE name = :n AND raised_at <= :before"
                ),
                {"n": name, "now": now, "before": now - quiet_s},
            ).rowcount
        return claimed == 1

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
                text("SELECT nik, created_at, last_seen FROM portal_session WHERE token_hash = :t"),
                {"t": self._token_hash(token)},
            ).first()

    @staticmethod
    def _ended(row, now: float) -> bool:
        """30 minutes without a request, or 12 hours after sign-in (portal.md)."""
        return now - row.last_seen >= SESSION_IDLE_S or now - row.created_at >= SESSION_MAX_S

    def session_nik_without_write(self, token: str | None) -> tuple[bool, str | None]:
        """`session_nik` when it would write nothing: (True, the NIK or None). (False,
        None) when the session is due a write (its last_seen moved, or its end): then
        `session_nik` is the answer. Reads only, so it may run on an event loop."""
        row = self._session_row(token)
        if row is None:
            return True, None
        now = self._clock()
        if now - row.last_seen >= SESSION_TOUCH_S or self._ended(row, now):
            return False, None
        return True, row.nik

    def session_nik(self, token: str | None) -> str | None:
        """The NIK of a live session; a session idle for 30 minutes, or signed in 12
        hours ago, is ended."""
        row = self._session_row(token)
        if row is None or token is None:
            return None
        th = self._token_hash(token)
        now = self._clock()
        if self._ended(row, now):
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

    # ------------------------------------------------------------------ the sweep
    def _sweep(self, now: float) -> None:
        """Now and then (once a minute per process), starts a sweep on a thread of its
        own: a sweep after a quiet night may have hundreds of thousands of rows to drop,
        and the request that happens to start it must not wait for that."""
        with self._sweep_lock:
            if now < self._next_sweep or (self._sweeper and self._sweeper.is_alive()):
                return
            self._next_sweep = now + SWEEP_EVERY_S
            self._sweeper = threading.Thread(
                target=self._sweep_quietly, args=(now,), name="portal-sweep", daemon=True
            )
            self._sweeper.start()

    def _sweep_quietly(self, now: float) -> None:
        try:
            self.sweep(now)
        except Exception as exc:  # the next sweep tries again; sign-ins go on meanwhile
            log.warning("portal: the sweep failed: %s", type(exc).__name__)

    def sweep(self, now: float | None = None) -> int:
        """Drops the sessions and guard rows that can no longer matter, and old minutes of
        the guessing count; returns how many rows went.

        Each statement finds its rows through an index over their times (migration 0007),
        never by reading a whole table, and deletes at most SWEEP_BATCH of them in one
        short write, so that sign-ins queue behind a batch, not behind the whole sweep.
        """
        params = sweep_params(self._clock() if now is None else now)
        gone = 0
        for statement, _index in SWEEPS:
            while True:
                with self._write() as conn:
                    deleted = conn.execute(text(statement), params).rowcount
                gone += deleted
                if deleted < SWEEP_BATCH:
                    break
        return gone


def _as_datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))  # SQLite hands text back through text()
