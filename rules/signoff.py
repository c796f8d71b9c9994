"""Sign-off before money (wave-rules.md): what an approver approves, and when it is enough.

The approved list is fingerprinted by a digest over the lottery seed's commitment, the
seats, the amount per participant and every confirmed participant (NIK and card number,
in NIK order); an approval counts only while the wave's digest is still the one its
approver saw, so a quota raise or a backfill round voids it by changing the digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rules.audit import canonical

MAX_APPROVERS = 2
DIGEST_VERSION = "prakerja-sign-off-v1"


def approved_list_digest(
    *,
    seed_sha256: str,
    seats: Any,
    training_balance: int,
    confirmed: Iterable[tuple[str, str]],
) -> str:
    """SHA-256 (lowercase hex) of the wave as it stands; `confirmed` is (NIK, card number)
    pairs in NIK order. The NIKs go into the hash only: the digest never shows one."""
    h = hashlib.sha256()
    h.update(f"{DIGEST_VERSION}\n{seed_sha256}\n{canonical(seats)}\n{training_balance}\n".encode())
    for nik, card in confirmed:
        h.update(f"{nik}:{card}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Approval:
    by: str
    at: str  # ISO UTC
    digest: str


def valid_approvals(approvals: Sequence[Approval], digest: str) -> list[Approval]:
    """The approvals of the wave as it stands (one per approver, the earliest)."""
    seen: set[str] = set()
    out = []
    for a in approvals:
        if a.digest == digest and same_person_key(a.by) not in seen:
            seen.add(same_person_key(a.by))
            out.append(a)
    return out


def same_person_key(name: str) -> str:
    """Names that are the same approver: case and surrounding spaces do not matter."""
    return " ".join(name.split()).casefold()


def approver_problem(name: str) -> str | None:
    """What is wrong with an approver's name, or None."""
    if not name.strip():
        return "the approver's name is required"
    if len(name) > 100:
        return "the approver's name is at most 100 characters"
    return None
