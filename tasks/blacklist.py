"""The program's revocation list: who, why and when, for BLACKLISTED."""

from __future__ import annotations

import csv

from models.db import SessionFactory
from models.tables import BlacklistEntry
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
    sessions: SessionFactory, entries: list[tuple[str, str]], *, added_by: str
) -> int:
    """Adds NIKs; one already listed keeps its first entry. Refuses a bad NIK by line."""
    for i, (nik, reason) in enumerate(entries, start=2):
        problem = entry_problem(nik, reason)
        if problem:
            raise ValueError(f"line {i}: {problem}")
    added = 0
    now = utcnow()
    with sessions() as session, session.begin():
        for nik, reason in entries:
            if session.get(BlacklistEntry, nik) is None:
                session.add(BlacklistEntry(nik=nik, reason=reason, added_by=added_by, added_at=now))
                session.flush()
                added += 1
    return added
