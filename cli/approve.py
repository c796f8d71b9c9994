"""`prakerja sign` and what `wave sign-off` / `payout sign-off` share: the approvers file
(PRAKERJA_APPROVERS) and signing an approval locally with the approver's private key
(wave-rules.md, "Sign-off before money"). Keys and signatures are never printed in an
error: the line names the approver, the file and the flag."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from cli.root import _refuse, main, settings
from rules.signature import Approvers, Kind


def approvers_or_refuse() -> Approvers | None:
    """The approvers file of the settings (None: approvals are unsigned); an unusable file
    is refused (exit 2) naming the file, the entry and the field."""
    from rules.signature import ApproversFileError
    from runtime.app import load_approvers

    try:
        return load_approvers(settings().approvers)
    except ApproversFileError as exc:
        _refuse(f"PRAKERJA_APPROVERS: {exc}")


def digest_or_refuse(digest: str) -> str:
    from rules.signature import DIGEST_PATTERN

    given = digest.strip().lower()
    if not DIGEST_PATTERN.fullmatch(given):
        _refuse("--digest: the digest shown (64 hexadecimal characters)")
    return given


def approval_flags_or_refuse(
    by: str | None, digest: str | None, key_file: str | None, what: str
) -> str | None:
    """The digest an approval names (None: no `--by`, only show `what`). `--digest` and
    `--key` go with `--by`; `--by` needs an acceptable name and the digest shown."""
    from rules.signoff import approver_problem

    if by is None:
        if digest or key_file:
            _refuse(f"--digest and --key go with --by (without --by: show the {what} only)")
        return None
    problem = approver_problem(by)
    if problem:
        _refuse(f"--by: {problem}")
    if not digest:
        _refuse("--digest: required with --by: the digest you were shown")
    return digest_or_refuse(digest)


def sign_with_key_file(key_file: str, kind: Kind, ident: int | date | str, digest: str) -> str:
    """The signature (base64) of `key_file`'s private key over the approval's text."""
    from rules.signature import KeyFileError, private_key_from, sign, signed_text

    try:
        data = Path(key_file).expanduser().read_bytes()
    except OSError as exc:
        _refuse(f"--key: cannot read {key_file} ({exc.strerror or type(exc).__name__})")
    try:
        key = private_key_from(data, f"--key {key_file}")
    except KeyFileError as exc:
        _refuse(str(exc))
    return sign(key, signed_text(kind, ident, digest))


def signature_for(
    approvers: Approvers | None,
    key_file: str | None,
    by: str,
    kind: Kind,
    ident: int | date,
    digest: str,
) -> str | None:
    """An approval's signature: under an approvers file, made here with `--key` (required);
    without one, approvals are unsigned and `--key` is refused rather than ignored."""
    if approvers is None:
        if key_file:
            _refuse(
                "--key: there is no approvers file (PRAKERJA_APPROVERS) to check the signature "
                "with: approvals are unsigned"
            )
        return None
    if not key_file:
        _refuse(
            f"--key: required: approvals are signed (approvers file {approvers.source}); "
            f"give {by.strip()}'s private key file"
        )
    return sign_with_key_file(key_file, kind, ident, digest)


def signing_line(signed: bool) -> str:
    return (
        "approvals are signed (each with its approver's key from PRAKERJA_APPROVERS)"
        if signed
        else "approvals are UNSIGNED (no approvers file, PRAKERJA_APPROVERS): the name "
        "given is not checked"
    )


@main.command("sign")
@click.option("--kind", type=click.Choice(["wave", "payout"]), required=True)
@click.option("--id", "ident", required=True, help="The wave number, or the as-of date.")
@click.option("--digest", required=True, help="The digest you were shown.")
@click.option("--key", "key_file", required=True, help="Your OpenSSH ed25519 private key.")
def sign_cmd(kind: Kind, ident: str, digest: str, key_file: str) -> None:
    """Prints your signature (base64) of an approval, for pasting into the Prefect sign-off
    form. Touches no database."""
    from rules.signature import subject_id

    try:
        subject = subject_id(kind, ident)
    except ValueError:
        what = "a wave number" if kind == "wave" else "a date, YYYY-MM-DD"
        _refuse(f"--id: {what}, not {ident!r}")
    click.echo(sign_with_key_file(key_file, kind, subject, digest_or_refuse(digest)))
