"""The program's revocation list: who, why and when, for BLACKLISTED."""

from __future__ import annotations

import csv

from models.db import SessionFactory
from models.tables import BlacklistEntry
from tasks import audit
from tasks.audit import Actor
from tasks.common import utcnow


def read_blacklist_file(path: str) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("nik", "reason") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing required column(s): {', '.join(missing)}")
        return [(row["nik"] or "", row["reason"] or "") for row in reader]


def entry_problem(nik: str, reason: str) -> str | None:
    """What is wrong with one entry (`nik: ...` or `reason: ...`), or None. Never the value."""
    if len(nik) != 16 or not nik.isascii() or not nik.isdigit():
        return f"nik: must be 16 digits (got {len(nik)} character{'s' * (len(nik) != 1)})"
    if not reason.strip():
        return "reason: required"
    return None


def add_to_blacklist(
    sessions: SessionFactory,
    entries: list[tuple[str, str]],
    *,
    added_by: str,
    actor: Actor | None = None,
    source: dict | None = None,
) -> int:
    """Adds NIKs; one already listed keeps its first entry. Refuses a bad NIK by line.

    With `actor`, the audit trail gets, in the same transaction, one `blacklist.add` row
    naming the NIK (one entry, no `source`), or one `blacklist.import` row with `source`
    (the file's name and SHA-256) and the counts: an import's NIKs are in its file."""
    for i, (nik, reason) in enumerate(entries, start=2):
        problem = entry_problem(nik, reason)
        if problem:
            raise ValueError(f"line {i}: {problem}")
    added = 0
    now = utcnow()
    with sessions() as session, session.begin():
        if actor is not None:
            audit.lock(session)
        for nik, reason in entries:
            if session.get(BlacklistEntry, nik) is None:
                session.add(BlacklistEntry(nik=nik, reason=reason, added_by=added_by, added_at=now))
                session.flush()
                added += 1
        if actor is not None and source is None and len(entries) == 1:
            nik, reason = entries[0]
            audit.append(
                session,
                actor,
                "blacklist.add",
                before={"nik": nik, "listed": not added},
                after={"nik": nik, "listed": True, "reason": reason, "added": bool(added)},
            )
        elif actor is not None:
            audit.append(
                session,
                actor,
                "blacklist.import",
                after={**(source or {}), "entries": len(entries), "added": added},
            )
    return added
