"""Sign-off before money and the audit trail, end to end: `prakerja` processes against the
partner simulator over real HTTP, the session's Prefect server, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import date

import pytest
import requests

from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text
from tests.cli_process import run_cli

SEED = "sign-off-seed"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 300
QUOTA = 15
RAISED = 20
BLACKLISTED_NIK = "3171010101900001"


@pytest.fixture
def stack(prefect_server, database_url, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread

    export = tmp_path / "wave-1.csv"
    generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
    with SimulatorThread(SEED) as sim:
        partners = tmp_path / "partners.toml"
        partners.write_text(simulator_partners_text(sim.base_url))
        env = dict(os.environ)
        env.update(
            {
                "PRAKERJA_DATABASE_URL": database_url,
                "PRAKERJA_PARTNERS": str(partners),
                SIMULATOR_KEY_ENV: "simulator",
                "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "USER": "operator-login",
            }
        )
        yield sim, env, export


def _statement(sim) -> list[dict]:
    r = requests.get(
        f"{sim.base_url}/issuer/v1/statements",
        params={"reference": "wave-1/training", "limit": 1000},
        headers={"Authorization": "Bearer simulator"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def _report(env) -> dict:
    done = run_cli(["wave", "report", "--wave", "1", "--json"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _shown_digest(env) -> str:
    shown = run_cli(["wave", "sign-off", "--wave", "1", "--json"], env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["digest"]


def _sign(env, name: str) -> subprocess.CompletedProcess:
    """An approval of the digest `wave sign-off` shows (unsigned: no approvers file)."""
    digest = _shown_digest(env)
    return run_cli(
        ["wave", "sign-off", "--wave", "1", "--by", name, "--digest", digest, "--json"], env
    )


def _tamper(database_url: str, sql: str) -> None:
    from sqlalchemy import text

    from models.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def test_two_approvers_gate_the_money_and_the_audit_trail_proves_every_action(stack, database_url):
    sim, env, export = stack
    run = [
        "wave", "run", "--wave", "1", "--registrants", str(export), "--quota", str(QUOTA),
        "--lottery-seed", "sign-off-lottery", "--reference-date", REFERENCE.isoformat(),
        "--sign-off", "2", "--by", "rina",
    ]  # fmt: skip
    first = run_cli(run, env)
    assert first.returncode == 5, first.stderr[-3000:]
    assert "waits for sign-off" in first.stderr
    report = _report(env)
    confirmed = report["funnel"]["confirmed"]
    assert 0 < confirmed <= QUOTA
    assert report["funnel"]["credited"] == 0 and report["ledger"] == {}
    assert report["sign_off"]["required"] == 2 and report["sign_off"]["approvals"] == []
    assert _statement(sim) == [], "the issuer saw a credit before any approval"

    # One approval: shown what is approved; the same person again is refused.
    ani = _sign(env, "ani")
    assert ani.returncode == 0, ani.stderr
    seen = json.loads(ani.stdout)["approved_now"]
    assert seen["confirmed"] == confirmed
    assert seen["total_amount"] == confirmed * 1_000_000
    assert seen["seats"] == QUOTA and re.fullmatch(r"[0-9a-f]{64}", seen["digest"])
    for same in ("ani", " ANI "):
        again = _sign(env, same)
        assert again.returncode == 2 and "already approved" in again.stderr, again.stderr
    # Still one approval short: a run credits nothing.
    waiting = run_cli(["wave", "run", "--wave", "1", "--by", "rina"], env)
    assert waiting.returncode == 5, waiting.stderr[-3000:]
    assert _statement(sim) == []

    # A quota raise changes the list: the approval given so far is void.
    raised = run_cli(
        ["wave", "raise-quota", "--wave", "1", "--quota", str(RAISED), "--by", "rina"], env
    )
    assert raised.returncode == 5, raised.stderr[-3000:]
    report = _report(env)
    assert report["sign_off"]["approvals"] == [] and report["sign_off"]["waiting"]
    confirmed = report["funnel"]["confirmed"]
    assert confirmed > seen["confirmed"]
    assert _statement(sim) == []

    for name in ("ani", "budi"):
        ok = _sign(env, name)
        assert ok.returncode == 0, ok.stderr
    late = _sign(env, "citra")
    assert late.returncode == 2 and "not waiting" in late.stderr, late.stderr

    done = run_cli(["wave", "run", "--wave", "1", "--by", "rina"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = _report(env)
    assert report["funnel"]["credited"] == report["funnel"]["confirmed"] == confirmed
    assert report["credited_amount"] == confirmed * 1_000_000
    assert [a["by"] for a in report["sign_off"]["approvals"]] == ["ani", "budi"]
    statement = _statement(sim)
    assert len(statement) == confirmed
    assert sum(e["amount"] for e in statement) == confirmed * 1_000_000
    recon = run_cli(["wave", "reconcile", "--wave", "1", "--json"], env)
    assert recon.returncode == 0 and json.loads(recon.stdout)["ok"], recon.stdout

    # Other operator actions, then the whole trail in order.
    announced = run_cli(["wave", "announce", "--wave", "1", "--by", "dewi"], env)
    assert announced.returncode == 0, announced.stderr
    added = run_cli(["blacklist", "add", BLACKLISTED_NIK, "--reason", "fraud", "--by", "eko"], env)
    assert added.returncode == 0, added.stderr
    trail = run_cli(["audit", "--json"], env)
    assert trail.returncode == 0, trail.stderr
    rows = json.loads(trail.stdout)
    assert [(r["action"], r["who"]) for r in rows] == [
        ("wave.created", "rina"),
        ("wave.run", "rina"),
        ("wave.sign-off", "ani"),
        ("wave.run", "rina"),
        ("wave.run", "rina"),
        ("wave.quota.raised", "rina"),
        ("wave.sign-off", "ani"),
        ("wave.sign-off", "budi"),
        ("wave.run", "rina"),
        ("wave.announced", "dewi"),
        ("blacklist.add", "eko"),
    ]
    assert [r["id"] for r in rows] == list(range(1, 12))
    raise_row = rows[5]
    assert raise_row["before"] == {"quota": QUOTA}
    assert raise_row["after"]["quota"] == RAISED
    assert rows[7]["after"]["confirmed"] == confirmed and rows[7]["after"]["approvals"] == 2
    assert rows[7]["after"]["signed"] is False and rows[7]["after"]["signature"] is None
    # No NIK anywhere but in the blacklist row, which is about that NIK.
    for r in rows:
        niks = re.findall(r"(?<!\d)\d{16}(?!\d)", json.dumps([r["before"], r["after"]]))
        assert niks == ([BLACKLISTED_NIK] * 2 if r["action"] == "blacklist.add" else []), r
    wave_only = json.loads(run_cli(["audit", "--wave", "1", "--json"], env).stdout)
    assert [r["id"] for r in wave_only] == list(range(1, 11))
    text = run_cli(["audit"], env)
    assert text.returncode == 0 and "wave.quota.raised" in text.stdout

    intact = run_cli(["audit", "--verify"], env)
    assert intact.returncode == 0, intact.stderr
    assert "11 rows" in intact.stdout
    # A row changed afterwards (the raise made to look smaller) is caught, by its id.
    _tamper(
        database_url, "UPDATE audit SET after_json = replace(after_json, '20', '19') WHERE id = 6"
    )
    altered = run_cli(["audit", "--verify"], env)
    assert altered.returncode == 1
    assert "row 6" in altered.stderr and "altered" in altered.stderr
    # A row removed is caught too (the chain is then broken at the first missing id).
    _tamper(database_url, "DELETE FROM audit WHERE id IN (3, 6)")
    removed = run_cli(["audit", "--verify", "--json"], env)
    assert removed.returncode == 1
    assert json.loads(removed.stdout)["first_broken"]["id"] == 3
