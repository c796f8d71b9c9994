"""The audit trail's hash chain (interfaces.md, `prakerja audit --verify`): pure functions.

Each row's hash is the SHA-256 of a canonical JSON of the row (its id, time, who, host,
action, wave, values before and after) and the previous row's hash, so that a row changed
or removed afterwards breaks the chain at that row, and every row after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS = "0" * 64  # the previous hash of the first row


def canonical(value: Any) -> str:
    """JSON with sorted keys, no spaces, datetimes as ISO text: the same bytes every time."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(
    *,
    id: int,
    at: datetime,
    who: str,
    host: str,
    action: str,
    wave_id: int | None,
    before: str | None,
    after: str | None,
    prev_hash: str,
) -> str:
    """`before` and `after` are the stored JSON texts (hashed as stored)."""
    body = canonical(
        {
            "id": id,
            "at": at.isoformat(),
            "who": who,
            "host": host,
            "action": action,
            "wave": wave_id,
            "before": before,
            "after": after,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """The first row the chain does not vouch for, and why."""

    id: int
    why: str

    def __str__(self) -> str:
        return f"row {self.id}: {self.why}"


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> tuple[int, ChainBreak | None]:
    """(rows checked, first break or None) over the rows in id order.

    Ids are 1, 2, 3, ... with no gap: a missing id is a removed row; a row whose stored
    hash is not its own hash was altered; a row whose prev_hash is not the hash of the row
    before it follows a removed or altered one."""
    expected_id, prev, n = 1, GENESIS, 0
    for r in rows:
        n += 1
        if r["id"] != expected_id:
            return n, ChainBreak(expected_id, f"missing (the next row is {r['id']})")
        if r["prev_hash"] != prev:
            return n, ChainBreak(r["id"], "its previous hash does not match the row before it")
        fields = {k: r[k] for k in ("id", "at", "who", "host", "action", "wave_id")}
        if row_hash(**fields, before=r["before"], after=r["after"], prev_hash=prev) != r["hash"]:
            return n, ChainBreak(r["id"], "altered (its hash does not match its content)")
        prev, expected_id = r["hash"], expected_id + 1
    return n, None
