"""Sign-off before money (wave-rules.md): what an approver approves, and when it is enough.

The approved list is fingerprinted by a digest over the lottery seed's commitment, the
seats, the amount per participant and every confirmed participant (NIK and card number,
in NIK order); an approval counts only while the wave's digest is still the one its
approver saw, so a quota raise or a backfill round voids it by changing the digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from rules.audit import canonical

if TYPE_CHECKING:
    from rules.signature import Approvers, Kind

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
    signature: str | None = None  # base64, under an approvers file
    fingerprint: str | None = None  # of the key that signed it
    audited: bool = False  # its audit row stands and says the same (matches_audit)


def matches_audit(approval: Approval, audit_rows: Iterable[tuple[str, Mapping[str, Any]]]) -> bool:
    """Whether one of the sign-off's audit rows, (who, after), says the same approver,
    digest, signature and key: an approval without one was not recorded by the program."""
    return any(
        who == approval.by
        and after.get("digest") == approval.digest
        and after.get("signature") == approval.signature
        and after.get("fingerprint") == approval.fingerprint
        for who, after in audit_rows
    )


def valid_approvals(
    approvals: Sequence[Approval],
    digest: str,
    *,
    approvers: Approvers | None = None,
    kind: Kind = "wave",
    ident: int | date | str | None = None,
) -> list[Approval]:
    """The approvals that count for the list as it stands (`digest`), one per approver,
    the earliest: audited ones only; under an approvers file, only those signed by their
    approver's key from the file over this digest, one per key."""
    people: set[str] = set()
    keys: set[str] = set()
    out = []
    for a in approvals:
        person = same_person_key(a.by)
        if a.digest != digest or not a.audited or person in people:
            continue
        if approvers is not None:
            approver = approvers.named(a.by)
            if (
                approver is None
                or ident is None
                or approvers.problem(a.by, a.signature, kind, ident, digest) is not None
                or a.fingerprint != approver.fingerprint
                or approver.fingerprint in keys
            ):
                continue
            keys.add(approver.fingerprint)
        people.add(person)
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
