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


def add_to_blacklist(
    sessions: SessionFactory, entries: list[tuple[str, str]], *, added_by: str
) -> int:
    """Adds NIKs; one already listed keeps its first entry. Refuses a bad NIK by line."""
    for i, (nik, reason) in enumerate(entries, start=2):
        if len(nik) != 16 or not nik.isascii() or not nik.isdigit():
            raise ValueError(f"line {i}: nik: must be 16 digits")
        if not reason.strip():
            raise ValueError(f"line {i}: reason: required")
    added = 0
    now = utcnow()
    with sessions() as session, session.begin():
        for nik, reason in entries:
            if session.get(BlacklistEntry, nik) is None:
                session.add(BlacklistEntry(nik=nik, reason=reason, added_by=added_by, added_at=now))
                session.flush()
                added += 1
    return added
