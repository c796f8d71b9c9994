"""The audit trail: one append-only, hash-chained row per operator action.

Who is what a shell and Prefect's open-source server can tell: the name the operator
gives (`--by`, by default the login user) and the host. Rows carry no personal data
beyond what the action is about: a blacklist addition names its NIK, an import its
file's SHA-256 and counts; nothing else holds a NIK.

Appending is serialized: PostgreSQL takes a transaction-scoped advisory lock, SQLite the
database's write lock (a write before the read of the last row); the id is the last id
plus one under that lock, and the primary key refuses a second row with the same id, so
the chain cannot fork even if the lock were bypassed.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from models.db import SessionFactory
from models.tables import AuditEntry
from rules.audit import GENESIS, ChainBreak, canonical, row_hash, verify_chain
from tasks.common import utcnow

A = AuditEntry.__table__  # type: ignore[attr-defined]
# pg_advisory_xact_lock key of the audit trail's append ("prakerja-audit" in ASCII, cut).
AUDIT_LOCK_KEY = 0x70726B6A61756474


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
    return new_id


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
