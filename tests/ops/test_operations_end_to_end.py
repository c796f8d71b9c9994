"""Operations end to end against a real `prefect server start` on loopback.

`prakerja ops setup` (twice), a wave during a partner outage, a failing wave run, the
deployments of prefect.yaml run by a process worker the way the UI starts them (rerun-wave,
weekly-wave, overnight-rollout), and `prakerja serve`. Notifications arrive at a local
webhook receiver; none may carry personal data from the export.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import httpx
import pytest

from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text
from tests.cli_process import run_cli
from tests.ops.conftest import (
    BIN,
    PrefectServer,
    Receiver,
    base_env,
    run,
    start,
    stop,
    wait_until,
)

SEED = "ops-seed"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 300
QUOTA = 20
DEPLOYMENT_NAMES = ["weekly-wave", "overnight-rollout", "rerun-wave", "raise-quota"]
FAST_PARTNERS = (
    "retry_attempts = 2\nretry_total_s = 2\nretry_backoff_s = 0.05\nretry_backoff_max_s = 0.1\n"
    "breaker_threshold = 3\nbreaker_cooldown_s = 60\n"
)


@dataclass
class Stack:
    api: PrefectServer
    receiver: Receiver
    env: dict[str, str]
    work: Path
    export: Path
    database_url: str
    sim: object

    def report(self, wave_id: int) -> dict:
        from models.db import make_engine, session_factory
        from readmodels.reporting import wave_report

        engine = make_engine(self.database_url)
        try:
            with session_factory(engine)() as session:
                return wave_report(session, wave_id)
        finally:
            engine.dispose()

    def execute(self, sql: str, **params) -> None:
        from sqlalchemy import text

        from models.db import make_engine

        engine = make_engine(self.database_url)
        try:
            with engine.begin() as conn:
                conn.execute(text(sql), params)
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def stack(prefect_api, receiver, client_home, tmp_path_factory):
    from partners.simulator.faults import faults_from_dict
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread

    work = tmp_path_factory.mktemp("ops-e2e")
    export = work / "wave-1.csv"
    generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
    outage = faults_from_dict({"partners": {"education": {"down": True}}})
    sim = SimulatorThread(SEED, outage).start()
    partners = work / "partners.toml"
    partners.write_text(
        simulator_partners_text(sim.base_url).replace(
            f'api_key_env = "{SIMULATOR_KEY_ENV}"\n',
            f'api_key_env = "{SIMULATOR_KEY_ENV}"\ntimeout_s = 5\n' + FAST_PARTNERS,
        )
    )
    database_url = f"sqlite:///{work}/prakerja.db"
    env = base_env(
        prefect_api,
        client_home,
        PRAKERJA_DATABASE_URL=database_url,
        PRAKERJA_PARTNERS=str(partners),
        PRAKERJA_ALERT_WEBHOOK_URL=receiver.url,
        **{SIMULATOR_KEY_ENV: "simulator"},
    )
    env.pop("PRAKERJA_BATCH_SIZE", None)  # one batch per stage: one partner.failed event
    try:
        yield Stack(prefect_api, receiver, env, work, export, database_url, sim)
    finally:
        sim.stop()


def _setup(stack: Stack, *args: str) -> dict:
    result = run_cli(["ops", "setup", "--json", *args], stack.env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def alerts(stack) -> dict:
    return _setup(stack)


def _ours(client) -> dict[str, int]:
    from collections import Counter

    return Counter(a.name for a in client.read_automations() if a.name.startswith("prakerja: "))


def test_ops_setup_is_idempotent_and_can_name_another_block(stack, alerts):
    from prefect.events.actions import SendNotification

    from deployments.automations import ALERTS

    assert alerts["block"]["name"] == "custom-webhook/prakerja-alerts"
    assert set(alerts["automations"].values()) <= {"created", "unchanged"}
    again = _setup(stack)
    assert again["block"]["state"] == "unchanged"
    assert set(again["automations"].values()) == {"unchanged"}
    with stack.api.client() as client:
        counts = _ours(client)
        assert len(counts) == len(ALERTS) + 1 and set(counts.values()) == {1}
        blocks = [b for b in client.read_block_documents() if b.name == "prakerja-alerts"]
        assert len(blocks) == 1
        # A setup interrupted half-way may leave a copy: the next setup removes it.
        first = client.read_automations_by_name("prakerja: partner failed")[0]
        from prefect.events.schemas.automations import AutomationCore

        client.create_automation(AutomationCore(**first.model_dump(exclude={"id"})))
        assert _ours(client)["prakerja: partner failed"] == 2
    healed = _setup(stack)
    assert healed["automations"]["prakerja: partner failed"] == "unchanged, removed 1 duplicates"

    # Another notification block can be named instead (Slack, Teams, email, ...).
    other = run(
        [
            sys.executable,
            "-c",
            "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B;"
            f"B(name='other', url='{stack.receiver.url}?other=1').save('other-hook')",
        ],
        stack.env,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    moved = _setup(stack, "--block", "custom-webhook/other-hook")
    assert moved["block"]["state"] == "existing"
    assert set(moved["automations"].values()) == {"updated"} | (
        {"unchanged"} if "prakerja: silent run crashed" in moved["automations"] else set()
    )
    with stack.api.client() as client:
        other_id = client.read_block_document_by_name("other-hook", "custom-webhook").id
        auto = client.read_automations_by_name("prakerja: wave pending")[0]
        assert isinstance(auto.actions[0], SendNotification)
        assert auto.actions[0].block_document_id == other_id
    refused = run_cli(["ops", "setup", "--block", "custom-webhook/absent"], stack.env)
    assert refused.returncode == 2 and "absent" in refused.stderr
    back = _setup(stack)
    assert back["automations"]["prakerja: wave pending"] == "updated"
    assert set(_setup(stack)["automations"].values()) == {"unchanged"}


@pytest.fixture(scope="module")
def outage_wave(stack, alerts) -> dict:
    """Wave 1 run with `prakerja wave run` while the education agency is down."""
    started = time.time()
    result = run_cli(
        [
            "wave", "run", "--wave", "1", "--registrants", str(stack.export),
            "--quota", str(QUOTA), "--lottery-seed", "ops-lottery",
            "--reference-date", REFERENCE.isoformat(),
        ],
        stack.env,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]
    return {"started": started, "finished": time.time(), "report": stack.report(1)}


def _personal_data(export: Path) -> set[str]:
    values: set[str] = set()
    with open(export, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for column in ("nik", "kk_number", "full_name", "phone", "email", "payout_account"):
                value = (row.get(column) or "").strip()
                if len(value) >= 6:
                    values.add(value)
    return values


def _events(stack: Stack, name: str) -> list[dict]:
    """The stored events of that name, oldest first (stored a moment after triggers ran)."""

    def stored():
        response = httpx.post(
            f"{stack.api.api_url}/events/filter",
            json={"filter": {"event": {"name": [name]}, "order": "ASC"}, "limit": 50},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["events"]

    return wait_until(stored, 30, f"stored {name} events", every=0.5)


def test_a_partner_outage_notifies_naming_the_partner_and_counts_without_personal_data(
    stack, outage_wave
):
    pending = outage_wave["report"]["pending"]
    assert set(pending) == {"PENDING_SCREENING"}
    items = pending["PENDING_SCREENING"]
    failed = stack.receiver.wait_for("partner education failed", "wave 1", timeout=30)
    assert "screening" in failed.subject
    assert f"{items} registrants" in failed.body and "rerun-wave" in failed.body
    summary = stack.receiver.wait_for("wave 1 finished with pending", timeout=30)
    assert f"PENDING_SCREENING {items}" in summary.body

    # One notification per partner and wave, whatever the number of failed batches.
    assert sum("partner education" in n.subject for n in stack.receiver.all()) == 1
    private = _personal_data(stack.export)
    assert len(private) > 5 * REGISTRANTS
    for n in stack.receiver.all():
        leaked = [v for v in private if v in n.raw]
        assert not leaked, f"personal data in a notification: {n.subject!r}"

    event = _events(stack, "prakerja.partner.failed")[0]
    assert event["payload"]["partner"] == "education" and event["payload"]["items"] == items
    occurred = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00")).timestamp()
    latency = failed.arrived - occurred
    print(f"\nevent-to-notification latency (partner.failed): {latency:.2f} s")
    assert latency < 15


def test_a_failed_wave_run_notifies_naming_the_run_and_stage(stack, alerts):
    code = (
        "from prefect import tags\n"
        "from flows.wave import wave\n"
        "with tags('prakerja', 'wave-99'):\n"
        "    state = wave(wave_id=99, return_state=True)\n"
        "assert state.is_failed()\n"
    )
    result = run([sys.executable, "-c", code], stack.env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    stage = stack.receiver.wait_for("[prakerja] wave-99-intake failed", timeout=30)
    # The wave's run is named wave-<N>-<Jakarta time> (a run of its own per run).
    whole = stack.receiver.wait_for("[prakerja] wave-99-", "(flow wave)", timeout=30)
    assert re.search(r"\[prakerja\] wave-99-\d{8}-\d{6} failed", whole.subject)
    assert "(flow intake)" in stage.body and "(flow wave)" in whole.body
    assert "does not exist" not in whole.body  # state messages are never forwarded


# ---------------------------------------------------------------- deployments + a worker
@pytest.fixture(scope="module")
def worker(stack):
    env = stack.env
    pool = run(
        [str(BIN / "prefect"), "work-pool", "create", "prakerja-process", "--type", "process"], env
    )
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stderr
    deployed = run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env, timeout=180)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    log = stack.work / "worker.log"
    proc = start(
        [str(BIN / "prefect"), "worker", "start", "--pool", "prakerja-process"],
        {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO"},
        log,
    )
    try:
        yield proc
    finally:
        stop(proc)


def _run_deployment(stack: Stack, name: str, parameters: dict, timeout: float = 240):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api.api_url}):
        return run_deployment(
            f"{name}/{name}", parameters=parameters, timeout=timeout, poll_interval=1
        )


def test_invalid_parameters_are_refused_when_the_run_is_created(stack, worker):
    from prefect.exceptions import PrefectHTTPStatusError

    for name, parameters, field in [
        ("rerun-wave", {"wave_id": 0}, "wave_id"),
        ("rerun-wave", {"wave_id": 1, "stages": ["intake", "lottery"]}, "stages"),
        ("raise-quota", {"wave_id": 1, "quota": 0}, "quota"),
        ("raise-quota", {"wave_id": 1}, "quota"),
    ]:
        with pytest.raises(PrefectHTTPStatusError) as refused:
            _run_deployment(stack, name, parameters, timeout=0)
        assert refused.value.response.status_code in (409, 422)
        assert field in refused.value.response.text


def test_a_rerun_started_like_from_the_ui_finishes_the_wave(stack, outage_wave, worker):
    from partners.simulator.faults import FaultsConfig

    stack.sim.simulator.set_faults(FaultsConfig())  # the education agency is back
    run_ = _run_deployment(stack, "rerun-wave", {"wave_id": 1})
    assert run_.state.is_completed(), run_.state.message
    assert run_.name.startswith("wave-1-rerun-")
    assert {"prakerja", "wave-1"} <= set(run_.tags)
    report = stack.report(1)
    assert report["status"] == "CLOSED" and report["pending"] == {}
    assert report["funnel"]["credited"] > 0
    done = stack.receiver.wait_for("wave 1 run completed", timeout=30)
    assert f"credited {report['funnel']['credited']}" in done.body


@pytest.fixture(scope="module")
def weekly_wave_2(stack, worker):
    drop = stack.work / "drop"
    drop.mkdir()
    shutil.copy(stack.export, drop / "wave-2.csv")
    (drop / "wave-2.toml").write_text(f"quota = 10\nreference_date = {REFERENCE.isoformat()}\n")
    run_ = _run_deployment(stack, "weekly-wave", {"drop_dir": str(drop)})
    return {"run": run_, "drop": drop}


def test_the_weekly_wave_runs_the_due_export_and_alerts_when_there_is_none(stack, weekly_wave_2):
    run_ = weekly_wave_2["run"]
    assert run_.state.is_completed(), run_.state.message
    assert run_.name == "wave-2-weekly" and {"prakerja", "wave-2"} <= set(run_.tags)
    report = stack.report(2)
    assert report["funnel"]["confirmed"] > 0 and report["funnel"]["credited"] == 0
    assert report["status"] == "OPEN"  # the overnight rollout credits them
    with stack.api.client() as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        draws = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["wave-2-draw"]))
        )
    assert len(draws) >= 2  # published at creation (seed hash only), then after the draw
    first = min(draws, key=lambda a: a.created)
    assert report["lottery_seed_sha256"] in first.data
    assert "published after the draw" in first.data
    latest = max(draws, key=lambda a: a.created)
    assert report["lottery_seed"] in latest.data and str(report["draw"]["pool_size"]) in latest.data

    again = _run_deployment(stack, "weekly-wave", {"drop_dir": str(weekly_wave_2["drop"])})
    assert again.state.is_completed() and again.name == "wave-3-weekly-no-export"
    missing = stack.receiver.wait_for("wave 3: no export", timeout=30)
    assert "wave-3.csv" in missing.body
    event = _events(stack, "prakerja.export.missing")[-1]
    occurred = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00")).timestamp()
    print(f"\nevent-to-notification latency (export.missing): {missing.arrived - occurred:.2f} s")


def test_the_overnight_rollout_credits_the_confirmed_and_alerts_when_late(stack, weekly_wave_2):
    assert weekly_wave_2["run"].state.is_completed()
    confirmed = stack.report(2)["funnel"]["confirmed"]
    stack.execute(
        "UPDATE wave SET rollout_deadline = :d WHERE wave_id = 2", d="2026-01-01 00:00:00"
    )
    run_ = _run_deployment(
        stack,
        "overnight-rollout",
        {"max_pause_seconds": 0, "batch_size": 10, "batches_per_step": 1},
    )
    assert run_.state.is_completed(), run_.state.message
    assert run_.name == "wave-2-overnight-rollout" and "wave-2" in run_.tags
    report = stack.report(2)
    assert report["funnel"]["credited"] > 0
    assert report["funnel"]["credited"] + report["reasons"].get("CREDIT_REJECTED", 0) == confirmed
    assert report["status"] == "CLOSED"
    late = stack.receiver.wait_for("wave 2: rollout will miss its deadline", timeout=30)
    assert "2026-01-01T00:00:00Z" in late.body and f"{confirmed} participants" in late.body
    with stack.api.client() as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["wave-2-rollout-progress"]))
        )
    assert progress and max(progress, key=lambda a: a.created).data == 100


# ---------------------------------------------------------------- prakerja serve
def test_prakerja_serve_serves_the_same_deployments_without_a_pool(stack, outage_wave, worker):
    refused = run_cli(["serve"], stack.env, timeout=60)
    assert refused.returncode == 2 and "--replace" in refused.stderr
    log = stack.work / "serve.log"
    proc = start(
        [sys.executable, "-m", "cli", "serve", "--replace"],
        {**stack.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        log,
    )
    try:
        with stack.api.client() as client:

            def served():
                if proc.poll() is not None:
                    raise AssertionError(log.read_text()[-3000:])
                try:
                    found = [client.read_deployment_by_name(f"{n}/{n}") for n in DEPLOYMENT_NAMES]
                except Exception:  # noqa: BLE001 - replaced ones are briefly missing
                    return None
                return found if all(d.work_pool_name is None for d in found) else None

            deployments = {d.name: d for d in wait_until(served, 60, "the served deployments")}
        weekly = deployments["weekly-wave"].schedules[0].schedule
        rollout = deployments["overnight-rollout"].schedules[0].schedule
        assert (weekly.cron, weekly.timezone) == ("0 17 * * 4", "Asia/Jakarta")
        assert (rollout.cron, rollout.timezone) == ("0 22 * * *", "Asia/Jakarta")
        assert deployments["rerun-wave"].schedules == []
        for d in deployments.values():
            assert d.global_concurrency_limit.limit == 1
            assert d.concurrency_options.collision_strategy == "ENQUEUE"

        rerun = _run_deployment(stack, "rerun-wave", {"wave_id": 1, "stages": ["announce"]})
        assert rerun.state.is_completed(), rerun.state.message
        refused_quota = _run_deployment(stack, "raise-quota", {"wave_id": 98, "quota": 5})
        assert refused_quota.state.is_failed()
        failed = stack.receiver.wait_for("[prakerja] wave-98-raise-quota-5 failed", timeout=30)
        assert "(flow raise-quota, deployment raise-quota)" in failed.body, failed.body
        assert "run the deployment raise-quota again" in failed.body
    finally:
        stop(proc, signal.SIGINT, wait_s=20)


# ---------------------------------------------------------------- a killed run
KILLED_WAVE = """
import time
from prefect import flow, tags

@flow(name="wave", flow_run_name="wave-{wave_id}")  # stands in for flows.wave.wave
def wave(wave_id: int) -> None:
    time.sleep(600)

with tags("prakerja", "wave-97"):
    wave(wave_id=97)
"""


def test_a_wave_run_whose_process_is_killed_is_marked_crashed_and_notifies(stack, alerts):
    """Hooks die with the process; the heartbeat automation does not."""
    short = {**stack.env, "PRAKERJA_SILENT_RUN_AFTER_S": "15"}
    assert _setup_env(short)["automations"]["prakerja: silent run crashed"] == "updated"
    proc = start([sys.executable, "-c", KILLED_WAVE], stack.env, stack.work / "killed.log")
    try:
        wait_until(
            lambda: any(
                e["resource"].get("prefect.resource.name") == "wave-97"
                for e in _events(stack, "prefect.flow-run.heartbeat")
            ),
            60,
            "a heartbeat of wave-97",
            every=0.5,
        )
    finally:
        stop(proc, signal.SIGKILL)
    crashed = stack.receiver.wait_for("[prakerja] wave-97 crashed", timeout=90)
    assert "(flow wave)" in crashed.body
    assert set(_setup_env(stack.env)["automations"].values()) <= {"updated", "unchanged"}


def _setup_env(env: dict[str, str]) -> dict:
    result = run_cli(["ops", "setup", "--json"], env, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)
