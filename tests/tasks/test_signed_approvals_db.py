"""Signed approvals and the digest-bound money gate (wave-rules.md, "Sign-off before
money"), on both databases: `prakerja wave sign-off` as an operator runs it (a
subprocess), keys made here with `cryptography`, and the gate the rollout asks
(`credits_allowed`) read back from the database."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from sqlalchemy import insert, select, text, update

from models.tables import PayoutRun, PayoutSignOff, Registrant, SignOff, Wave
from rules.signature import sign, signed_text
from runtime.app import load_approvers
from tasks.draw import draw_participants
from tests.cli_process import run_cli
from tests.tasks.factories import make_wave
from tests.tasks.test_paid_once_db import add, nik

R = Registrant.__table__
S = SignOff.__table__
PS = PayoutSignOff.__table__
QUOTA = 3
SIGN_OFFS = "action = 'wave.sign-off'"


def make_key(tmp_path: Path, name: str) -> tuple[Ed25519PrivateKey, Path, str]:
    """A fresh ed25519 key: (key, its private key file, its public line)."""
    key = Ed25519PrivateKey.generate()
    path = tmp_path / f"{name}_key"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return key, path, public


def approvers_file(tmp_path: Path, entries: dict[str, str], name: str = "approvers") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        "".join(f'[[approver]]\nname = "{n}"\npublic_key = "{k}"\n\n' for n, k in entries.items())
    )
    return path


@pytest.fixture
def wave(sessions, database_url, tmp_path):
    """Wave 1 waiting for two approvals (its draw done, every participant confirmed), an
    approvers file with ani's and budi's keys, and citra's key that is not in it."""
    make_wave(sessions, wave_id=1, quota=QUOTA, sign_off=2)
    add(sessions, 1, [nik(i) for i in range(6)])
    draw_participants(sessions, 1)
    with sessions() as session, session.begin():
        chosen = session.execute(
            select(R.c.id).where(R.c.wave_id == 1, R.c.state == "SELECTED").order_by(R.c.id)
        ).scalars()
        for i, rid in enumerate(chosen):
            session.execute(
                update(R)
                .where(R.c.id == rid)
                .values(state="CONFIRMED", card_number=f"50490000000{i:05d}")
            )
    keys = {n: make_key(tmp_path, n) for n in ("ani", "budi", "citra")}
    file = approvers_file(tmp_path, {n: keys[n][2] for n in ("ani", "budi")})
    env = {k: v for k, v in os.environ.items() if k != "PRAKERJA_PARTNERS"}
    env.update({"PRAKERJA_DATABASE_URL": database_url, "PRAKERJA_APPROVERS": str(file)})
    return {"env": env, "keys": keys, "file": file, "sessions": sessions}


def shown(env) -> dict:
    done = run_cli(["wave", "sign-off", "--wave", "1", "--json"], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def approve(env, by: str, digest: str, key: Path | None):
    args = ["wave", "sign-off", "--wave", "1", "--by", by, "--digest", digest, "--json"]
    return run_cli([*args, "--key", str(key)] if key else args, env)


def allowed(sessions, approvers) -> bool:
    from tasks.signoff import credits_allowed

    with sessions() as session:
        return credits_allowed(session, session.get(Wave, 1), approvers)


def refused_naming(done, approver: str, *secrets: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and approver in line, line
    for secret in secrets:
        assert secret not in line
    return line


def _secrets(wave, name: str, digest: str) -> list[str]:
    key, path, public = wave["keys"][name]
    return [
        public.split()[1][:20],
        path.read_text().splitlines()[1][:20],
        sign(key, signed_text("wave", 1, digest))[:16],
    ]


def test_one_person_typing_two_names_cannot_release_money_under_an_approvers_file(wave):
    env, keys = wave["env"], wave["keys"]
    approvers = load_approvers(str(wave["file"]))
    digest = shown(env)["digest"]
    assert shown(env)["signed"] is True
    ok = approve(env, "ani", digest, keys["ani"][1])
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["approved_now"]["signed"] is True
    # Ani again under budi's name, with her own key: not budi's signature.
    line = refused_naming(
        approve(env, "budi", digest, keys["ani"][1]), "budi", *_secrets(wave, "ani", digest)
    )
    assert "not budi's" in line
    # ... or as " ANI " (the same person): refused as already approved.
    refused_naming(approve(env, " ANI ", digest, keys["ani"][1]), "ANI")
    assert not allowed(wave["sessions"], approvers)
    # An approvers file giving one key to two names is refused (naming the entry).
    same_key = approvers_file(
        wave["file"].parent, {"ani": keys["ani"][2], "budi": keys["ani"][2]}, "one-key"
    )
    twice = run_cli(
        ["wave", "sign-off", "--wave", "1"], {**env, "PRAKERJA_APPROVERS": str(same_key)}
    )
    line = refused_naming(twice, "approver 2 (budi)", keys["ani"][2].split()[1][:20])
    assert "public_key" in line and str(same_key) in line
    # Budi with his own key: two approvals, the money may move.
    ok = approve(env, "budi", digest, keys["budi"][1])
    assert ok.returncode == 0, ok.stderr
    assert allowed(wave["sessions"], approvers)


def test_two_approvals_with_one_key_count_once(wave):
    """Two approval rows carrying the same key's fingerprint (ani's key signed for both
    names, budi's row then rewritten to look like his): counted once."""
    env, keys = wave["env"], wave["keys"]
    approvers = load_approvers(str(wave["file"]))
    digest = shown(env)["digest"]
    assert approve(env, "ani", digest, keys["ani"][1]).returncode == 0
    assert approve(env, "budi", digest, keys["budi"][1]).returncode == 0
    assert allowed(wave["sessions"], approvers)
    ani = approvers.named("ani")
    with wave["sessions"]() as session, session.begin():
        session.execute(
            update(S).where(S.c.approved_by == "budi").values(key_fingerprint=ani.fingerprint)
        )
    assert not allowed(wave["sessions"], approvers)


@pytest.mark.parametrize(
    "case", ["another approver's key", "a key not in the file", "another digest", "no signature"]
)
def test_a_wrong_signature_is_refused_naming_the_approver_never_the_key(wave, case):
    from tasks.audit import Actor
    from tasks.signoff import SignOffError, record_approval

    env, keys = wave["env"], wave["keys"]
    approvers = load_approvers(str(wave["file"]))
    digest = shown(env)["digest"]
    if case in ("another approver's key", "a key not in the file"):
        other = keys["budi" if case == "another approver's key" else "citra"]
        done = approve(env, "ani", digest, other[1])
        line = refused_naming(done, "ani", other[2].split()[1][:20], *_secrets(wave, "ani", digest))
        assert "not ani's" in line
    elif case == "another digest":
        # A signature pasted into the form, made over what another digest said.
        forged = sign(keys["ani"][0], signed_text("wave", 1, "a" * 64))
        with pytest.raises(SignOffError) as refused:
            record_approval(
                wave["sessions"], 1, Actor("ani", "h"), via="prefect", seen_digest=digest,
                approvers=approvers, signature=forged,
            )  # fmt: skip
        assert "not ani's" in str(refused.value) and forged[:16] not in str(refused.value)
    else:
        refused_naming(approve(env, "ani", digest, None), "ani")
        with pytest.raises(SignOffError, match="ani carries no signature"):
            record_approval(
                wave["sessions"], 1, Actor("ani", "h"), via="prefect", seen_digest=digest,
                approvers=approvers, signature=None,
            )  # fmt: skip
    # Nobody in the file approved: nothing recorded, nothing audited.
    with wave["sessions"]() as session:
        assert session.execute(select(S.c.id)).all() == []
        assert (
            session.execute(
                text("SELECT count(*) FROM audit WHERE action = 'wave.sign-off'")
            ).scalar()
            == 0
        )
    # A name not in the file at all.
    refused_naming(approve(env, "citra", digest, keys["citra"][1]), "citra")


def test_a_change_of_the_confirmed_list_between_showing_and_approving_is_refused(wave):
    env, keys = wave["env"], wave["keys"]
    before = shown(env)
    assert before["waiting"] and before["wave"] == 1 and before["confirmed"] == QUOTA
    missing = run_cli(["wave", "sign-off", "--wave", "1", "--by", "ani"], env)
    assert missing.returncode == 2 and "--digest" in missing.stderr
    # A backfill confirms one more participant after the wave was shown.
    add(wave["sessions"], 1, [nik(50)], "CONFIRMED", draw_round=1, card_number="5049000000099999")
    stale = approve(env, "ani", before["digest"], keys["ani"][1])
    assert "changed since it was shown" in refused_naming(stale, "wave 1")
    # A signature of the old digest cannot be recorded against the new one either.
    from tasks.audit import Actor
    from tasks.signoff import SignOffError, record_approval

    old = sign(keys["ani"][0], signed_text("wave", 1, before["digest"]))
    now = shown(env)["digest"]
    with pytest.raises(SignOffError, match="not ani's"):
        record_approval(
            wave["sessions"], 1, Actor("ani", "h"), via="cli", seen_digest=now,
            approvers=load_approvers(str(wave["file"])), signature=old,
        )  # fmt: skip


def test_a_hand_inserted_sign_off_row_releases_nothing(wave):
    """Unsigned (no approvers file): rows written straight into sign_off, with the
    current digest, have no audit row: the gate and the report count none of them; the
    same approvals given through the command do release the money."""
    env = {k: v for k, v in wave["env"].items() if k != "PRAKERJA_APPROVERS"}
    sessions = wave["sessions"]
    current = shown(env)
    assert current["signed"] is False
    with sessions() as session, session.begin():
        session.connection().execute(
            insert(S),
            [
                {
                    "wave_id": 1, "approved_by": who, "approver_key": who, "host": "h",
                    "via": "cli", "at": datetime(2026, 12, 1), "seats_json": str(QUOTA),
                    "confirmed": QUOTA, "total_amount": QUOTA * 1_000_000,
                    "digest": current["digest"],
                }
                for who in ("ani", "budi")
            ],
        )  # fmt: skip
    assert not allowed(sessions, None)
    assert shown(env)["approvals"] == [] and shown(env)["waiting"]
    with sessions() as session, session.begin():
        session.execute(text("DELETE FROM sign_off"))
    first = approve(env, "ani", current["digest"], None)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["approved_now"]["signed"] is False
    # Its audit row altered afterwards (another digest written in): it vouches for nothing.
    with sessions() as session, session.begin():
        session.execute(
            text(f"UPDATE audit SET after_json = replace(after_json, :d, :x) WHERE {SIGN_OFFS}"),
            {"d": current["digest"], "x": "f" * 64},
        )
    assert shown(env)["approvals"] == []
    with sessions() as session, session.begin():
        session.execute(
            text(f"UPDATE audit SET after_json = replace(after_json, :x, :d) WHERE {SIGN_OFFS}"),
            {"d": current["digest"], "x": "f" * 64},
        )
    assert approve(env, "budi", current["digest"], None).returncode == 0
    assert allowed(sessions, None)
    rows = json.loads(run_cli(["audit", "--wave", "1", "--json"], env).stdout)
    signed = [r["after"]["signed"] for r in rows if r["action"] == "wave.sign-off"]
    assert signed == [False, False]
    # The same two approvals do not count once an approvers file is configured.
    assert not allowed(sessions, load_approvers(str(wave["file"])))


def test_a_hand_inserted_payout_sign_off_row_counts_for_nothing(wave):
    from datetime import date

    from tasks.payout_signoff import _counted

    day = date(2026, 12, 20)
    digest = "b" * 64
    approvers = load_approvers(str(wave["file"]))
    forged = sign(wave["keys"]["ani"][0], signed_text("payout", day, digest))
    with wave["sessions"]() as session, session.begin():
        conn = session.connection()
        conn.execute(
            insert(PayoutRun.__table__),
            [
                {
                    "as_of": day,
                    "status": "RUNNING",
                    "sign_off": 1,
                    "started_at": datetime(2026, 12, 20),
                }
            ],
        )
        conn.execute(
            insert(PS),
            [
                {
                    "as_of": day, "approved_by": "ani", "approver_key": "ani", "host": "h",
                    "via": "cli", "at": datetime(2026, 12, 20), "payments": 1,
                    "total_amount": 600_000, "digest": digest, "signature": forged,
                    "key_fingerprint": approvers.named("ani").fingerprint,
                }
            ],
        )  # fmt: skip
    with wave["sessions"]() as session:
        # Signed by ani's own key over this very digest, yet never recorded by the program.
        assert _counted(session, day, digest, approvers) == []
        assert _counted(session, day, digest, None) == []
