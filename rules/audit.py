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


@dataclass(frozen=True)
class Witnessed:
    """What a witness outside the database holds of one row: its id and hash (and, for
    the reader, when and what)."""

    id: int
    hash: str
    at: str = ""
    action: str = ""


def check_witness(
    chain: Mapping[int, str], witnessed: Iterable[Witnessed], source: str
) -> ChainBreak | None:
    """The first row a witness contradicts, over a chain already verified (`chain`: id to
    hash, ids 1..n): a witnessed row that is missing (the trail was cut, or renumbered
    after a row was removed) or whose hash differs (rewritten, even with every later hash
    recomputed: the witness holds the old ones). Rows after the last witnessed one are
    not the witness's to vouch for (the crash window between commit and witness)."""
    last = max(chain, default=0)
    matched = 0  # the last witnessed id whose hash matched: the chain up to it stands
    for w in sorted(witnessed, key=lambda w: w.id):
        if w.id > last:
            return ChainBreak(
                last + 1, f"missing: {source} witnessed rows up to {w.id}, the trail ends at {last}"
            )
        if w.id not in chain:
            return ChainBreak(w.id, f"missing: {source} witnessed it")
        if chain[w.id] != w.hash:
            since = "" if matched >= w.id - 1 else f" (or a row after row {matched})"
            return ChainBreak(
                w.id,
                f"altered{since}: its hash is not the one {source} witnessed ({w.hash[:12]}...)",
            )
        matched = w.id
    return None


@dataclass(frozen=True)
class Approval:
    """An approval as its table holds it (sign_off or payout_sign_off), for matching with
    the audit row its action wrote. `fields` are the columns an audit row also holds in
    its `after` (digest, amounts, via; a signature or fingerprint where kept)."""

    table: str
    id: int
    action: str  # the audit action that records it: wave.sign-off / payout.sign-off
    subject: Any  # the wave number (the audit row's wave) or the as-of date (after.as_of)
    approved_by: str
    fields: Mapping[str, Any]

    def __str__(self) -> str:
        what = "wave" if self.action == "wave.sign-off" else "payout run"
        return f"{self.table} row {self.id} ({what} {self.subject}, by {self.approved_by})"


@dataclass(frozen=True)
class AuditedApproval:
    """An audit row of an approval: its action, who, wave and `after` values (parsed)."""

    id: int
    action: str
    who: str
    wave_id: int | None
    after: Mapping[str, Any]


def _same(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)  # a date column against its ISO text in JSON


def unaudited_approvals(
    approvals: Iterable[Approval], audited: Iterable[AuditedApproval]
) -> list[Approval]:
    """The approvals with no audit row of their own: same action, subject, approver, and
    every field the audit row also holds equal. Each audit row vouches for one approval."""
    unused = list(audited)
    missing: list[Approval] = []
    for a in approvals:
        for i, row in enumerate(unused):
            subject = row.wave_id if a.action == "wave.sign-off" else row.after.get("as_of")
            if (
                row.action == a.action
                and row.who.strip() == a.approved_by.strip()
                and _same(subject, a.subject)
                and all(_same(row.after[k], v) for k, v in a.fields.items() if k in row.after)
                and "digest" in row.after
            ):
                del unused[i]
                break
        else:
            missing.append(a)
    return missing
