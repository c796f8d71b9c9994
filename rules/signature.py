"""Signed approvals (wave-rules.md, "Sign-off before money"): the approvers file, the text an
approver signs, and Ed25519 signatures over it (the `cryptography` package, never our own).

An approval counts under an approvers file only with its approver's signature over
`prakerja-sign-off\\n<wave|payout>\\n<wave number or as-of date>\\n<digest>\\n`. Nothing here
ever puts a key or a signature into an error message: they name the approver, the file,
the entry and the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
    load_ssh_public_key,
)

from rules.signoff import approver_problem, same_person_key

Kind = Literal["wave", "payout"]
KINDS: tuple[Kind, ...] = ("wave", "payout")
SIGNED_PREFIX = "prakerja-sign-off"
DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")
SIGNATURE_BYTES = 64


class ApproversFileError(ValueError):
    """The approvers file is unusable; the message names the file, the entry and the field
    (never a key)."""


class KeyFileError(ValueError):
    """A private key file that cannot sign (missing, encrypted, not OpenSSH ed25519)."""


def subject_id(kind: Kind, ident: int | date | str) -> str:
    """The approved thing's id as signed: a wave's number, a payout run's as-of date."""
    if kind == "wave":
        number = int(ident) if not isinstance(ident, date) else 0
        if number < 1:
            raise ValueError(f"a wave number is a positive integer, not {ident!r}")
        return str(number)
    if kind == "payout":
        day = ident if isinstance(ident, date) else date.fromisoformat(str(ident))
        return day.isoformat()
    raise ValueError(f"the kind is wave or payout, not {kind!r}")


def signed_text(kind: Kind, ident: int | date | str, digest: str) -> bytes:
    """The exact UTF-8 bytes an approver signs."""
    if not DIGEST_PATTERN.fullmatch(digest):
        raise ValueError("the digest is 64 lowercase hexadecimal characters")
    return f"{SIGNED_PREFIX}\n{kind}\n{subject_id(kind, ident)}\n{digest}\n".encode()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """OpenSSH's `SHA256:<base64 without padding>` of the key blob (as `ssh-keygen -l`)."""
    line = public_key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def sign(private_key: Ed25519PrivateKey, message: bytes) -> str:
    """The signature as base64 of its 64 raw bytes."""
    return base64.b64encode(private_key.sign(message)).decode()


def verifies(public_key: Ed25519PublicKey, signature: str | None, message: bytes) -> bool:
    """Whether `signature` (base64) is `public_key`'s over `message`; False for anything
    malformed."""
    if not signature:
        return False
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(raw, message)
    except InvalidSignature:
        return False
    return True


def private_key_from(data: bytes, source: str) -> Ed25519PrivateKey:
    """An unencrypted OpenSSH ed25519 private key (`ssh-keygen -t ed25519 -N ""`)."""
    try:
        key = load_ssh_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"{source}: the key is encrypted (a passphrase); use an unencrypted ed25519 key "
            'kept for approving (ssh-keygen -t ed25519 -N "")'
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{source}: not an OpenSSH private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{source}: not an ed25519 key (ssh-keygen -t ed25519)")
    return key


@dataclass(frozen=True)
class Approver:
    name: str
    public_key: Ed25519PublicKey
    fingerprint: str


@dataclass(frozen=True)
class Approvers:
    """The approvers file: who may approve, each with the key that signs their approvals."""

    source: str
    approvers: tuple[Approver, ...]

    def named(self, name: str) -> Approver | None:
        key = same_person_key(name)
        return next((a for a in self.approvers if same_person_key(a.name) == key), None)

    def problem(
        self, name: str, signature: str | None, kind: Kind, ident: int | date | str, digest: str
    ) -> str | None:
        """Why `signature` is not `name`'s approval of `digest`, in one line naming the
        approver (never the key or the signature); None when it is."""
        approver = self.named(name)
        if approver is None:
            return f"{name.strip()} is not an approver (not in the approvers file {self.source})"
        if not signature or not signature.strip():
            return f"the approval by {approver.name} carries no signature (--key)"
        if not verifies(approver.public_key, signature, signed_text(kind, ident, digest)):
            return (
                f"the signature is not {approver.name}'s over this {kind}'s digest "
                f"(checked with {approver.name}'s key in {self.source})"
            )
        return None


def parse_approvers(text: str, source: str) -> Approvers:
    """The `[[approver]]` tables of an approvers file (name, public_key)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ApproversFileError(f"{source}: not TOML: {exc}") from None
    unknown = sorted(set(data) - {"approver"})
    if unknown:
        raise ApproversFileError(f"{source}: unknown table or key {unknown[0]!r}")
    entries = data.get("approver")
    if not isinstance(entries, list) or not entries:
        raise ApproversFileError(f"{source}: no [[approver]] table")
    out: list[Approver] = []
    for i, entry in enumerate(entries, 1):
        where = f"{source}: approver {i}"
        if not isinstance(entry, dict):
            raise ApproversFileError(f"{where}: not a table")
        extra = sorted(set(entry) - {"name", "public_key"})
        if extra:
            raise ApproversFileError(f"{where}: unknown field {extra[0]!r}")
        name = entry.get("name")
        if not isinstance(name, str) or approver_problem(name):
            why = approver_problem(name) if isinstance(name, str) else "a text is required"
            raise ApproversFileError(f"{where}: name: {why}")
        name = " ".join(name.split())
        where = f"{where} ({name})"
        line = entry.get("public_key")
        if not isinstance(line, str) or not line.strip():
            raise ApproversFileError(f"{where}: public_key: required (an ssh-ed25519 line)")
        if line.split()[0] != "ssh-ed25519":
            raise ApproversFileError(f"{where}: public_key: not an ssh-ed25519 key")
        try:
            key = load_ssh_public_key(line.strip().encode())
        except (ValueError, UnsupportedAlgorithm):
            raise ApproversFileError(
                f"{where}: public_key: not a valid OpenSSH public key"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise ApproversFileError(f"{where}: public_key: not an ed25519 key")
        approver = Approver(name, key, fingerprint(key))
        for j, other in enumerate(out, 1):
            if same_person_key(other.name) == same_person_key(name):
                raise ApproversFileError(f"{where}: name: the same as approver {j}'s")
            if other.fingerprint == approver.fingerprint:
                raise ApproversFileError(
                    f"{where}: public_key: the same key as approver {j} ({other.name}): "
                    "each approver needs a key of their own"
                )
        out.append(approver)
    return Approvers(source, tuple(out))
