"""The daily-payouts deployment against a real `prefect server start` (operations.md,
lifecycle.md "Payout runs"): served by `prakerja serve`, a run that requires sign-off
pauses with the payout form and pays nothing; the approval submitted the way the UI does
resumes it, and it pays exactly the approved list, audited."""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import requests

from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text
from tests.cli_process import run_cli
from tests.ops.conftest import base_env, start, stop, wait_until

SEED = "ui-payout-seed"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 160
QUOTA = 6
AUTH = {"Authorization": "Bearer simulator"}


@pytest.fixture(scope="module")
def served(prefect_api, receiver, client_home, tmp_path_factory):
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread

    work = tmp_path_factory.mktemp("ui-payout")
    export = work / "wave-1.csv"
    generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
    sim = SimulatorThread(SEED, lives="none").start()
    partners = work / "partners.toml"
    partners.write_text(simulator_partners_text(sim.base_url))
    database_url = f"sqlite:///{work}/prakerja.db"
    env = base_env(
        prefect_api,
        client_home,
        PRAKERJA_DATABASE_URL=database_url,
        PRAKERJA_PARTNERS=str(partners),
        PRAKERJA_ALERT_WEBHOOK_URL=receiver.url,
        **{SIMULATOR_KEY_ENV: "simulator"},
    )
    env.pop("PRAKERJA_BATCH_SIZE", None)
    log = work / "serve.log"
    proc = None
    try:
        setup = run_cli(["ops", "setup", "--json"], env, timeout=120)
        assert setup.returncode == 0, setup.stderr[-2000:]
        assert "prakerja: payout awaiting sign-off" in json.loads(setup.stdout)["automations"]
        proc = start(
            [sys.executable, "-m", "cli", "serve", "--replace"],
            {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
            log,
        )
        yield {"env": env, "export": export, "sim": sim, "db": database_url, "log": log}
    finally:
        if proc is not None:
            stop(proc, signal.SIGINT, wait_s=20)
        sim.stop()


def _credited(database_url: str) -> list[dict]:
    from sqlalchemy import text

    from models.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT nik, card_number FROM registrant WHERE state = 'CREDITED'")
            ).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def test_the_daily_payouts_run_pauses_for_sign_off_then_pays_the_approved_list(
    served, prefect_api, receiver
):
    env, sim = served["env"], served["sim"]
    run = [
        "wave", "run", "--wave", "1", "--registrants", str(served["export"]), "--quota",
        str(QUOTA), "--lottery-seed", "ui-payout", "--reference-date", REFERENCE.isoformat(),
    ]  # fmt: skip
    first = run_cli(run, env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    people = _credited(served["db"])
    assert len(people) == QUOTA
    # Each trained within the last hours: their first installment is due today.
    now = datetime.now(UTC)
    events = []
    for i, p in enumerate(people):
        for kind, hours in (("PURCHASED", 2), ("COMPLETED", 1)):
            event = {
                "event_id": f"ui-{i}-{kind}",
                "type": kind,
                "card_number": p["card_number"],
                "course_id": "c1",
                "at": (now - timedelta(hours=hours)).isoformat(),
            }
            if kind == "PURCHASED":
                event["price"] = 250_000
            events.append(event)
    r = requests.post(
        f"{sim.base_url}/_admin/training/events",
        json={"platform": "marketplace-a", "events": events},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200, r.text

    with prefect_api.client() as client:

        def deployment():
            if (log := served["log"]).exists() and "Traceback" in log.read_text():
                raise AssertionError(log.read_text()[-3000:])
            try:
                d = client.read_deployment_by_name("daily-payouts/daily-payouts")
            except Exception:  # noqa: BLE001 - not served yet
                return None
            return d if d.work_pool_name is None else None

        served_deployment = wait_until(deployment, 120, "the served daily-payouts")
        assert served_deployment.schedules and "0 2 * * *" in str(served_deployment.schedules)
        payout = client.create_flow_run_from_deployment(
            served_deployment.id, parameters={"sign_off": 1}
        )

        def state(name: str):
            fr = client.read_flow_run(payout.id)
            if fr.state and fr.state.is_final():
                raise AssertionError(f"the run ended {fr.state.name}: {fr.state.message}")
            return fr if fr.state and fr.state.name == name else None

        paused = wait_until(lambda: state("Paused"), 300, "the payout run paused for sign-off")
        keyset = paused.state.state_details.run_input_keyset
        assert keyset, "paused without a form"
        form = json.loads(client.read_flow_run_input(payout.id, keyset["schema"]))
        assert {"approver", "approve", "digest", "payments"} <= set(form["properties"])
        described = json.loads(client.read_flow_run_input(payout.id, keyset["description"]))
        shown = json.loads(
            run_cli(["payout", "sign-off", "--as-of", _today(), "--json"], env, timeout=120).stdout
        )
        assert shown["payments"] == QUOTA and shown["digest"] in described
        note = receiver.wait_for("waits for sign-off", timeout=60)
        assert f"{QUOTA} payments" in note.body
        assert _paid(sim) == 0, "paid before sign-off"

        answer = {
            "approver": "sari",
            "approve": True,
            "as_of": shown["as_of"],
            "payments": shown["payments"],
            "total_rupiah": shown["total_amount"],
            "digest": shown["digest"],
        }
        resumed = httpx.post(
            f"{prefect_api.api_url}/flow_runs/{payout.id}/resume",
            json={"run_input": answer},
            timeout=30,
        )
        assert resumed.status_code in (200, 201), resumed.text

        def finished():
            fr = client.read_flow_run(payout.id)
            return fr if fr.state and fr.state.is_final() else None

        done = wait_until(finished, 300, "the payout run to finish")
        assert done.state.is_completed(), done.state.message

    assert _paid(sim) == QUOTA
    report = json.loads(run_cli(["payout", "report", "--json"], env, timeout=120).stdout)
    assert report["payments"]["incentive"]["1"]["paid"] == QUOTA
    assert report["rupiah_paid"]["incentive"] == QUOTA * 600_000
    rows = json.loads(run_cli(["audit", "--json"], env).stdout)
    approvals = [r for r in rows if r["action"] == "payout.sign-off"]
    assert [r["who"] for r in approvals] == ["sari"]
    assert approvals[0]["after"]["via"] == "prefect"
    assert approvals[0]["after"]["digest"] == shown["digest"]
    runs = [r for r in rows if r["action"] == "payout.run"]
    assert runs and runs[0]["who"].startswith("deployment daily-payouts")


def _today() -> str:
    from rules.settings import jakarta_today

    return jakarta_today().isoformat()


def _paid(sim) -> int:
    from partners.simulator.truth import PAYMENT_PROVIDERS

    total = 0
    for provider in PAYMENT_PROVIDERS:
        r = requests.get(
            f"{sim.base_url}/_admin/payment/{provider}/disbursements", headers=AUTH, timeout=10
        )
        total += sum(d["status"] == "COMPLETED" for d in r.json()["disbursements"])
    return total
