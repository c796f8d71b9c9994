"""Sign-off in the Prefect UI (operations.md), against a real `prefect server start`:
a wave that needs sign-off notifies, a deployment run pauses after accounts with the
sign-off form and holds no lease while paused; under an approvers file, a form sent with
another key's signature is refused (the run pauses again, nothing recorded), and the
approval with the signature `prakerja sign` printed, submitted through the API the UI
uses, resumes it; it then credits exactly the confirmed list."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import date

import httpx
import pytest
import requests

from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text
from tests.cli_process import run_cli
from tests.ops.conftest import base_env, start, stop, wait_until
from tests.tasks.test_signed_approvals_db import approvers_file, make_key

SEED = "ui-sign-off-seed"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 200
QUOTA = 12


@pytest.fixture(scope="module")
def served(prefect_api, receiver, client_home, tmp_path_factory):
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread

    work = tmp_path_factory.mktemp("ui-sign-off")
    export = work / "wave-1.csv"
    generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
    sim = SimulatorThread(SEED).start()
    partners = work / "partners.toml"
    partners.write_text(simulator_partners_text(sim.base_url))
    database_url = f"sqlite:///{work}/prakerja.db"
    keys = {name: make_key(work, name) for name in ("sari", "tono")}
    approvers = approvers_file(work, {"sari": keys["sari"][2]})  # tono's key is in no file
    env = base_env(
        prefect_api,
        client_home,
        PRAKERJA_DATABASE_URL=database_url,
        PRAKERJA_PARTNERS=str(partners),
        PRAKERJA_APPROVERS=str(approvers),
        PRAKERJA_ALERT_WEBHOOK_URL=receiver.url,
        **{SIMULATOR_KEY_ENV: "simulator"},
    )
    env.pop("PRAKERJA_BATCH_SIZE", None)
    log = work / "serve.log"
    proc = None
    try:
        setup = run_cli(["ops", "setup", "--json"], env, timeout=120)
        assert setup.returncode == 0, setup.stderr[-2000:]
        assert "prakerja: awaiting sign-off" in json.loads(setup.stdout)["automations"]
        proc = start(
            [sys.executable, "-m", "cli", "serve", "--replace"],
            {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
            log,
        )
        yield {
            "env": env,
            "export": export,
            "sim": sim,
            "db": database_url,
            "log": log,
            "keys": keys,
        }
    finally:
        if proc is not None:
            stop(proc, signal.SIGINT, wait_s=20)
        sim.stop()


def _report(env) -> dict:
    done = run_cli(["wave", "report", "--wave", "1", "--json"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _statement(sim) -> list:
    return requests.get(
        f"{sim.base_url}/issuer/v1/statements",
        params={"reference": "wave-1/training"},
        headers={"Authorization": "Bearer simulator"},
        timeout=10,
    ).json()["entries"]


def _lease_owner(database_url: str):
    from sqlalchemy import text

    from models.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT lease_owner FROM wave WHERE wave_id = 1")).scalar()
    finally:
        engine.dispose()


def test_a_paused_run_resumes_with_the_forms_approval_and_credits(served, prefect_api, receiver):
    env, sim = served["env"], served["sim"]
    run = [
        "wave", "run", "--wave", "1", "--registrants", str(served["export"]), "--quota",
        str(QUOTA), "--lottery-seed", "ui-lottery", "--reference-date", REFERENCE.isoformat(),
        "--sign-off", "1", "--by", "rina",
    ]  # fmt: skip
    first = run_cli(run, env, timeout=600)
    assert first.returncode == 5, first.stderr[-3000:]
    waiting = _report(env)
    confirmed, digest = waiting["funnel"]["confirmed"], waiting["sign_off"]["digest"]
    assert confirmed > 0 and waiting["funnel"]["credited"] == 0
    note = receiver.wait_for("[prakerja] wave 1 waits for sign-off", timeout=60)
    assert f"{confirmed} confirmed participants" in note.body
    assert f"Rp {confirmed * 1_000_000}" in note.body and digest in note.body

    with prefect_api.client() as client:

        def deployment():
            if (log := served["log"]).exists() and "Traceback" in log.read_text():
                raise AssertionError(log.read_text()[-3000:])
            try:
                d = client.read_deployment_by_name("rerun-wave/rerun-wave")
            except Exception:  # noqa: BLE001 - not served yet
                return None
            return d if d.work_pool_name is None else None

        rerun = client.create_flow_run_from_deployment(
            wait_until(deployment, 120, "the served rerun-wave").id, parameters={"wave_id": 1}
        )

        def state(name: str):
            fr = client.read_flow_run(rerun.id)
            if fr.state and fr.state.is_final():
                raise AssertionError(f"the run ended {fr.state.name}: {fr.state.message}")
            return fr if fr.state and fr.state.name == name else None

        paused = wait_until(lambda: state("Paused"), 300, "the rerun paused for sign-off")
        keyset = paused.state.state_details.run_input_keyset
        assert keyset, "paused without a form"
        form = client.read_flow_run_input(rerun.id, keyset["schema"])
        assert {"approver", "approve", "draw_digest", "signature"} <= set(
            json.loads(form)["properties"]
        )
        described = json.loads(client.read_flow_run_input(rerun.id, keyset["description"]))
        assert digest in described and f"{confirmed}" in described
        assert "**signed**" in described and "prakerja sign --kind wave --id 1" in described
        assert _lease_owner(served["db"]) is None, "a paused run holds the wave's lease"
        assert _statement(sim) == []

        # What the UI's form sends: POST /flow_runs/{id}/resume with run_input.
        answer = {
            "approver": "sari",
            "approve": True,
            "wave": 1,
            "seats": str(QUOTA),
            "confirmed_participants": confirmed,
            "total_rupiah": confirmed * 1_000_000,
            "draw_digest": digest,
        }

        def resume(signature: str) -> None:
            # As a person would press the form's button again: Prefect's server answers
            # 503 when its own database is busy (seen once in CI with five shards).
            for attempt in range(5):
                resumed = httpx.post(
                    f"{prefect_api.api_url}/flow_runs/{rerun.id}/resume",
                    json={"run_input": {**answer, "signature": signature}},
                    timeout=30,
                )
                if resumed.status_code != 503:
                    break
                time.sleep(1 + attempt)
            assert resumed.status_code in (200, 201), resumed.text
            assert resumed.json()["status"] == "ACCEPT", resumed.text

        def signature_by(name: str) -> str:
            signed = run_cli(
                ["sign", "--kind", "wave", "--id", "1", "--digest", digest, "--key",
                 str(served["keys"][name][1])],
                {k: v for k, v in env.items() if k != "PRAKERJA_DATABASE_URL"},
            )  # fmt: skip
            assert signed.returncode == 0, signed.stderr
            return signed.stdout.strip()

        # Signed with a key that is not sari's: refused, the run pauses again.
        resume(signature_by("tono"))

        def paused_again():
            fr = state("Paused")
            return fr if fr and fr.state.id != paused.state.id else None

        wait_until(paused_again, 300, "the rerun paused again after a refused signature")
        assert _report(env)["sign_off"]["approvals"] == []
        assert _statement(sim) == []
        resume(signature_by("sari"))

        def finished():
            fr = client.read_flow_run(rerun.id)
            return fr if fr.state and fr.state.is_final() else None

        done = wait_until(finished, 300, "the rerun to finish")
        assert done.state.is_completed(), done.state.message

    report = _report(env)
    assert report["funnel"]["credited"] == confirmed
    assert report["credited_amount"] == confirmed * 1_000_000
    assert [a["by"] for a in report["sign_off"]["approvals"]] == ["sari"]
    recon = run_cli(["wave", "reconcile", "--wave", "1", "--json"], env)
    assert recon.returncode == 0 and json.loads(recon.stdout)["statement_count"] == confirmed
    rows = json.loads(run_cli(["audit", "--wave", "1", "--json"], env).stdout)
    actions = [(r["action"], r["who"]) for r in rows]
    assert actions[:2] == [("wave.created", "rina"), ("wave.run", "rina")]
    assert actions[2][0] == "wave.rerun" and actions[2][1].startswith("deployment rerun-wave")
    assert actions[3] == ("wave.sign-off", "sari")
    assert rows[3]["after"]["via"] == "prefect" and rows[3]["after"]["digest"] == digest
    assert rows[3]["after"]["signed"] is True
    assert [r["action"] for r in rows].count("wave.sign-off") == 1  # tono's: not recorded
    assert run_cli(["audit", "--verify"], env).returncode == 0
