"""The audit trail: one append-only, hash-chained row per operator action.

Who is what a shell and Prefect's open-source server can tell: the name the operator
gives (`--by`, by default the login user) and the host. Rows carry no personal data
beyond what the action is about: a blacklist addition names its NIK, an import its
file's SHA-256 and counts; nothing else holds a NIK.

Appending is serialized: PostgreSQL takes a transaction-scoped advisory lock, SQLite the
database's write lock (a write before the read of the last row); the id is the last id
plus one under that lock, and the primary key refuses a second row with the same id, so
the chain cannot fork even if the lock were bypassed.

A witness outside the database keeps each row's (id, hash) once its transaction has
committed (never a row rolled back): the file PRAKERJA_AUDIT_WITNESS names (one JSON line
per row, fsync'd) and, where a Prefect API is configured, a `prakerja.audit.appended`
event. `verify_trail` holds the chain to every witness it can read.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from models.db import SessionFactory
from models.tables import AuditEntry
from rules.audit import (
    GENESIS,
    Approval,
    AuditedApproval,
    ChainBreak,
    Witnessed,
    canonical,
    check_witness,
    row_hash,
    unaudited_approvals,
    verify_chain,
)
from runtime.app import AUDIT_WITNESS_INFO
from tasks.common import utcnow

log = logging.getLogger(__name__)
A = AuditEntry.__table__  # type: ignore[attr-defined]
# pg_advisory_xact_lock key of the audit trail's append ("prakerja-audit" in ASCII, cut).
AUDIT_LOCK_KEY = 0x70726B6A61756474
# The witness event (operations.md, events) and its resource: ids, hashes and actions only.
AUDIT_APPENDED = "prakerja.audit.appended"
AUDIT_RESOURCE = "prakerja.audit"
# session.info: the rows this session's transaction appended, witnessed once it commits
# (the witness file is runtime/app.py's AUDIT_WITNESS_INFO, set on the App's sessions).
_PENDING_INFO = "prakerja.audit_pending"


def login_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without passwd entry)
        return os.environ.get("USER") or "operator"


@dataclass(frozen=True)
class Actor:
    """Who did it, as far as the program can tell: a given name and a host."""

    who: str
    host: str

    @classmethod
    def here(cls, who: str | None = None) -> Actor:
        return cls((who or "").strip() or login_user(), socket.gethostname())

    @classmethod
    def deployment(cls) -> Actor:
        """A deployment's run: its deployment and flow run names (Prefect's open-source
        server does not say which person started it)."""
        from prefect.runtime import deployment, flow_run

        name = deployment.name or flow_run.flow_name or "prefect"
        return cls(f"deployment {name} (run {flow_run.name})", socket.gethostname())


def _json(value: Any) -> str | None:
    return None if value is None else canonical(value)


def lock(session: Session):
    """Takes the trail's append lock for the session's transaction (until it ends); call
    it first in a transaction that reads before it appends (SQLite refuses to upgrade a
    read snapshot another writer has overtaken). Returns the session's connection."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    else:  # any write statement takes SQLite's database write lock, even one of no row
        conn.execute(update(A).where(text("1 = 0")).values(id=A.c.id))
    return conn


def append(
    session: Session,
    actor: Actor,
    action: str,
    *,
    wave_id: int | None = None,
    before: Any = None,
    after: Any = None,
) -> int:
    """Appends one row in the session's transaction (it commits with the action it
    records); returns its id."""
    conn = lock(session)
    last = conn.execute(select(A.c.id, A.c.hash).order_by(A.c.id.desc()).limit(1)).first()
    new_id = (last.id + 1) if last else 1
    prev = last.hash if last else GENESIS
    at = utcnow()
    before_json, after_json = _json(before), _json(after)
    digest = row_hash(
        id=new_id,
        at=at,
        who=actor.who,
        host=actor.host,
        action=action,
        wave_id=wave_id,
        before=before_json,
        after=after_json,
        prev_hash=prev,
    )
    row = {
        "id": new_id,
        "at": at,
        "who": actor.who,
        "host": actor.host,
        "action": action,
        "wave_id": wave_id,
        "before_json": before_json,
        "after_json": after_json,
        "prev_hash": prev,
        "hash": digest,
    }
    conn.execute(insert(A), [row])
    if new_id == 1:
        trail = digest
    else:
        trail = conn.execute(select(A.c.hash).where(A.c.id == 1)).scalar_one_or_none() or prev
    _witness_after_commit(session, _Pending(new_id, digest, at, action, trail))
    return new_id


# ---------------------------------------------------------------- the witness
@dataclass(frozen=True)
class _Pending:
    """A row appended in a transaction not yet committed."""

    id: int
    hash: str
    at: datetime
    action: str
    trail: str  # the hash of the trail's first row: which trail a witness speaks of

    def line(self, database: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "hash": self.hash,
            "at": self.at.isoformat() + "Z",
            "action": self.action,
            "trail": self.trail,
            "database": database,
        }


def _witness_after_commit(session: Session, row: _Pending) -> None:
    """Witnesses `row` when the session's transaction commits, and never if it (or the
    savepoint it was appended in) rolls back: a witness never claims a row the database
    does not have. A crash between the commit and the witness leaves a row unwitnessed,
    which `verify_trail` allows after the last witnessed one."""
    pending = session.info.get(_PENDING_INFO)
    if pending is None:
        pending = session.info[_PENDING_INFO] = []
        event.listen(session, "after_commit", _on_commit)
        event.listen(session, "after_soft_rollback", _on_rollback)
        event.listen(session, "after_transaction_end", _on_end)
    pending.append((session.get_nested_transaction(), row))


def _on_commit(session: Session) -> None:
    pending = session.info.get(_PENDING_INFO)
    if not pending or session.in_nested_transaction():  # a savepoint released: not yet
        return
    rows = [row for _, row in pending]
    pending.clear()
    # Never raise here: the action has committed; a witness that fails is logged, and
    # verify then finds these rows unwitnessed (allowed after the last witnessed one).
    try:
        database = database_identity(session)
    except Exception as exc:  # noqa: BLE001
        log.warning("audit witness: no database identity (%s)", type(exc).__name__)
        database = ""
    path = session.info.get(AUDIT_WITNESS_INFO)
    if path:
        try:
            write_witness_file(Path(path), [r.line(database) for r in rows])
        except OSError as exc:
            log.warning(
                "audit witness %s: rows %s not written (%s)",
                path,
                ", ".join(str(r.id) for r in rows),
                type(exc).__name__,
            )
    emit_witness_events([r.line(database) for r in rows])


def _on_rollback(session: Session, previous_transaction: Any) -> None:
    pending = session.info.get(_PENDING_INFO)
    if not pending:
        return
    if not previous_transaction.nested:
        pending.clear()
        return

    def inside(tx: Any) -> bool:
        while tx is not None:
            if tx is previous_transaction:
                return True
            tx = tx.parent
        return False

    pending[:] = [(tx, row) for tx, row in pending if not inside(tx)]


def _on_end(session: Session, transaction: Any) -> None:
    # The outermost transaction ended without a commit (closed, rolled back): forget it.
    if transaction.parent is None and not transaction.nested:
        pending = session.info.get(_PENDING_INFO)
        if pending:
            pending.clear()


def database_identity(session: Session) -> str:
    """Which database a trail lives in (a SQLite file, a PostgreSQL host and database),
    never its credentials: the Prefect witness may serve several databases."""
    url = session.get_bind().engine.url
    if url.get_backend_name() == "sqlite":
        where = str(Path(url.database or "").resolve()) if url.database else ":memory:"
    else:
        where = f"{url.host}:{url.port or ''}/{url.database}"
    return hashlib.sha256(f"{url.get_backend_name()}:{where}".encode()).hexdigest()[:16]


def write_witness_file(path: Path, lines: list[dict[str, Any]]) -> None:
    """Appends one JSON line per row in one write (O_APPEND: concurrent writers' lines
    never interleave) and fsyncs it; a new file's folder entry is fsync'd too."""
    data = "".join(canonical(line) + "\n" for line in lines).encode("utf-8")
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def emit_witness_events(lines: list[dict[str, Any]]) -> None:
    """One `prakerja.audit.appended` event per row where a Prefect API is configured:
    ids, hashes and actions, never who or what about. Never fails the action."""
    try:
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            return
        from prefect.events import emit_event

        for line in lines:
            emit_event(
                event=AUDIT_APPENDED,
                resource={
                    "prefect.resource.id": AUDIT_RESOURCE,
                    "prefect.resource.name": "audit trail",
                },
                payload=line,
            )
    except Exception as exc:  # noqa: BLE001 - the action has committed: log, go on
        log.warning("audit: could not emit %s: %s", AUDIT_APPENDED, type(exc).__name__)


def record(
    sessions: SessionFactory,
    actor: Actor,
    action: str,
    *,
    wave_id: int | None = None,
    before: Any = None,
    after: Any = None,
    attempts: int = 5,
) -> int:
    """`append` in a transaction of its own, tried again when a concurrent writer won."""
    for attempt in range(attempts):
        try:
            with sessions() as session, session.begin():
                return append(session, actor, action, wave_id=wave_id, before=before, after=after)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _rows(session: Session, wave_id: int | None = None):
    q = select(A).order_by(A.c.id)
    if wave_id is not None:
        q = q.where(A.c.wave_id == wave_id)
    return session.execute(q.execution_options(yield_per=10_000))


def audit_trail(session: Session, wave_id: int | None = None) -> list[dict[str, Any]]:
    """Every row (or one wave's), oldest first, as `prakerja audit --json` prints them."""
    return [
        {
            "id": r.id,
            "at": r.at.isoformat() + "Z",
            "who": r.who,
            "host": r.host,
            "action": r.action,
            "wave": r.wave_id,
            "before": json.loads(r.before_json) if r.before_json is not None else None,
            "after": json.loads(r.after_json) if r.after_json is not None else None,
            "hash": r.hash,
        }
        for r in _rows(session, wave_id)
    ]


def verify(session: Session) -> tuple[int, ChainBreak | None]:
    """Checks the whole chain (every wave's rows and the program's)."""
    return verify_chain(
        {
            "id": r.id,
            "at": r.at,
            "who": r.who,
            "host": r.host,
            "action": r.action,
            "wave_id": r.wave_id,
            "before": r.before_json,
            "after": r.after_json,
            "prev_hash": r.prev_hash,
            "hash": r.hash,
        }
        for r in _rows(session)
    )


# ---------------------------------------------------------------- verify against witnesses
@dataclass(frozen=True)
class WitnessRead:
    """What one witness holds of this trail."""

    source: str
    rows: list[Witnessed]
    note: str = ""  # e.g. events of other trails, a torn last line
    other_trails: int = 0  # Prefect: this database's events of other first rows

    @property
    def last_id(self) -> int | None:
        return max((w.id for w in self.rows), default=None)


@dataclass
class TrailCheck:
    """`prakerja audit --verify`: the head, what was checked, and every break found."""

    rows: int
    head: tuple[int, str] | None
    breaks: list[ChainBreak] = field(default_factory=list)
    witnesses: list[WitnessRead] = field(default_factory=list)
    approvals: int = 0
    unaudited: list[Approval] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks and not self.unaudited

    @property
    def first_break(self) -> ChainBreak | None:
        return min(self.breaks, key=lambda b: b.id, default=None)


class WitnessError(Exception):
    """A witness that cannot be read as one (a line that is not a witnessed row)."""


def read_witness_file(path: Path) -> WitnessRead:
    """The rows a witness file holds. A last line cut short (a crash while it was
    written) is left out and said; any other line that is not a row is an error."""
    text_ = path.read_text(encoding="utf-8")
    lines = text_.split("\n")
    torn = lines.pop() if lines else ""
    rows: list[Witnessed] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            rows.append(
                Witnessed(int(d["id"]), str(d["hash"]), d.get("at", ""), d.get("action", ""))
            )
        except (ValueError, KeyError, TypeError):
            raise WitnessError(f"{path}: line {n} is not a witnessed row") from None
    note = f"its last line is cut short (line {len(lines) + 1}): left out" if torn.strip() else ""
    return WitnessRead(str(path), rows, note)


def read_prefect_witness(trail: str | None, database: str) -> WitnessRead | None:
    """The `prakerja.audit.appended` events of this trail in Prefect (as far back as the
    server keeps events: PREFECT_SERVER_EVENTS_RETENTION_PERIOD, 7 days by default);
    None where no Prefect API is configured."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None
    from datetime import UTC

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventOrder,
    )

    wanted = EventFilter(
        event=EventNameFilter(name=[AUDIT_APPENDED]),
        occurred=EventOccurredFilter(since=datetime(2000, 1, 1, tzinfo=UTC)),
        order=EventOrder.ASC,
    )
    payloads: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=wanted, limit=50)
        payloads += [e.payload for e in page.events]
        while page.next_page is not None:
            page = client.read_events_page(str(page.next_page))
            payloads += [e.payload for e in page.events]
    rows, others = [], set()
    for p in payloads:
        try:
            w = Witnessed(int(p["id"]), str(p["hash"]), str(p.get("at", "")), str(p.get("action")))
        except (KeyError, TypeError, ValueError):
            continue  # not an event this code sends
        if p.get("trail") == trail:
            rows.append(w)
        elif p.get("database") == database:
            others.add(str(p.get("trail")))
    note = f"events of {len(others)} other trail(s) of this database left out" if others else ""
    return WitnessRead(f"Prefect events {AUDIT_APPENDED}", rows, note, len(others))


def _chain(session: Session) -> dict[int, str]:
    return dict(session.execute(select(A.c.id, A.c.hash).order_by(A.c.id)).tuples().all())


def _approvals(session: Session) -> tuple[list[Approval], list[AuditedApproval]]:
    """Every approval row (plain SQL: whatever columns the tables have now) and every
    audit row of an approval."""
    conn = session.connection()
    names = set(inspect(conn).get_table_names())
    approvals: list[Approval] = []
    for table, action, subject in (
        ("sign_off", "wave.sign-off", "wave_id"),
        ("payout_sign_off", "payout.sign-off", "as_of"),
    ):
        if table not in names:
            continue
        for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id")).mappings():  # noqa: S608
            values = dict(r)
            if "seats_json" in values:  # as the audit row holds it: parsed
                values["seats"] = json.loads(values.pop("seats_json") or "null")
            if "key_fingerprint" in values:  # the audit row's `fingerprint`
                values["fingerprint"] = values.pop("key_fingerprint")
            fields = {
                k: v
                for k, v in values.items()
                if k not in ("id", "approved_by", "approver_key", "at", subject)
            }
            approvals.append(Approval(table, r["id"], action, r[subject], r["approved_by"], fields))
    audited = [
        AuditedApproval(
            r.id, r.action, r.who, r.wave_id, {**json.loads(r.after_json or "{}"), "host": r.host}
        )
        for r in session.execute(
            select(A.c.id, A.c.action, A.c.who, A.c.host, A.c.wave_id, A.c.after_json)
            .where(A.c.action.in_(["wave.sign-off", "payout.sign-off"]))
            .order_by(A.c.id)
        )
    ]
    return approvals, audited


def verify_trail(
    session: Session, witness_files: Iterable[Path] = (), *, prefect: bool = True
) -> TrailCheck:
    """The hash chain, then every witness (the files, and Prefect's events where
    configured): every witnessed (id, hash) in the chain unchanged, none after its end;
    then every approval against its audit row. Raises WitnessError for a witness file
    that is not one."""
    checked, broken = verify(session)
    chain = _chain(session)
    head = max(chain.items()) if chain else None
    result = TrailCheck(checked, head)
    if broken is not None:
        result.breaks.append(broken)
    reads = [read_witness_file(path) for path in witness_files]
    if prefect:
        database = database_identity(session)
        try:
            read = read_prefect_witness(chain.get(1), database)
        except Exception as exc:  # noqa: BLE001 - a server that cannot answer witnesses nothing
            read = WitnessRead(
                f"Prefect events {AUDIT_APPENDED}", [], f"not read ({type(exc).__name__})"
            )
        if read is not None:
            if chain and not read.rows and read.note:
                # This database's events witness another first row, none this one: row 1
                # (and the chain after it) was rewritten, or the database made again.
                result.breaks.append(
                    ChainBreak(
                        1, "altered: Prefect's events of this database witness another first row"
                    )
                )
            reads.append(read)
    for read in reads:
        found = check_witness(chain, read.rows, read.source)
        if found is not None:
            result.breaks.append(found)
    result.witnesses = reads
    approvals, audited = _approvals(session)
    result.approvals = len(approvals)
    result.unaudited = unaudited_approvals(approvals, audited)
    return result
