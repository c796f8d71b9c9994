"""rules/signature.py: the text an approver signs, OpenSSH fingerprints, Ed25519 checks
and the approvers file's refusals (naming the file, the entry and the field, never a key)."""

from __future__ import annotations

import base64
import hashlib
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from rules.signature import (
    ApproversFileError,
    KeyFileError,
    fingerprint,
    parse_approvers,
    private_key_from,
    sign,
    signed_text,
    verifies,
)

DIGEST = "ab" * 32


def public_line(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def test_the_signed_text_is_exactly_the_specs():
    assert signed_text("wave", 7, DIGEST) == f"prakerja-sign-off\nwave\n7\n{DIGEST}\n".encode()
    assert signed_text("payout", date(2026, 12, 1), DIGEST) == (
        f"prakerja-sign-off\npayout\n2026-12-01\n{DIGEST}\n".encode()
    )
    with pytest.raises(ValueError):
        signed_text("wave", 1, DIGEST.upper())


def test_a_signature_verifies_only_for_its_key_and_its_text():
    ani, budi = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    text = signed_text("wave", 1, DIGEST)
    signature = sign(ani, text)
    assert len(base64.b64decode(signature)) == 64
    assert verifies(ani.public_key(), signature, text)
    assert not verifies(budi.public_key(), signature, text)
    assert not verifies(ani.public_key(), signature, signed_text("wave", 2, DIGEST))
    assert not verifies(ani.public_key(), signature, signed_text("payout", "2026-01-01", DIGEST))
    for bad in (None, "", "not base64!", base64.b64encode(b"x" * 63).decode()):
        assert not verifies(ani.public_key(), bad, text)


def test_the_fingerprint_is_openssh_sha256_of_the_key_blob():
    key = Ed25519PrivateKey.generate()
    blob = base64.b64decode(public_line(key).split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint(key.public_key()) == expected


def test_an_encrypted_or_foreign_private_key_is_refused_clearly():
    key = Ed25519PrivateKey.generate()
    plain = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    assert private_key_from(plain, "k").public_key() == key.public_key()
    with pytest.raises(KeyFileError, match="not an OpenSSH private key"):
        private_key_from(b"hello", "k")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("[[approver]]\nname = 'ani'\n", "approver 1 (ani): public_key: required"),
        ("[[approver]]\npublic_key = '{ani}'\n", "approver 1: name:"),
        ("[[approver]]\nname = 'ani'\npublic_key = 'ssh-rsa AAAA'\n", "not an ssh-ed25519"),
        ("[[approver]]\nname = 'ani'\npublic_key = 'ssh-ed25519 AAAAnope'\n", "not a valid"),
        (
            "[[approver]]\nname = 'ani'\npublic_key = '{ani}'\n"
            "[[approver]]\nname = 'budi'\npublic_key = '{ani}'\n",
            "approver 2 (budi): public_key: the same key as approver 1 (ani)",
        ),
        (
            "[[approver]]\nname = 'ani'\npublic_key = '{ani}'\n"
            "[[approver]]\nname = ' ANI'\npublic_key = '{budi}'\n",
            "approver 2 (ANI): name: the same as approver 1's",
        ),
        ("[[approver]]\nname = 'ani'\npublic_key = '{ani}'\nrole = 'x'\n", "unknown field 'role'"),
        ("[approver\n", "not TOML"),
        ("", "no [[approver]] table"),
    ],
)
def test_a_bad_approvers_file_names_the_file_entry_and_field_never_the_key(body, named):
    ani, budi = public_line(Ed25519PrivateKey.generate()), public_line(Ed25519PrivateKey.generate())
    with pytest.raises(ApproversFileError) as refused:
        parse_approvers(body.format(ani=ani, budi=budi), "approvers.toml")
    message = str(refused.value)
    assert message.startswith("approvers.toml: ") and named in message
    assert ani.split()[1][:12] not in message and budi.split()[1][:12] not in message
