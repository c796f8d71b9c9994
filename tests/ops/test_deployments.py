"""prefect.yaml and `prakerja serve` declare the deployments of operations.md, and agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments.serve import DEPLOYMENTS, POOL, TIMEZONE
from models.enums import Stage

ROOT = Path(__file__).resolve().parents[2]
# Keys Prefect reads in a deployment entry; anything else would be silently ignored.
DEPLOYMENT_KEYS = {
    "name",
    "entrypoint",
    "description",
    "tags",
    "parameters",
    "schedules",
    "concurrency_limit",
    "work_pool",
    "version",
    "enforce_parameter_schema",
    "pull",
}
WANTED = {
    "weekly-wave": ("0 17 * * 4", "weekly_wave"),
    "overnight-rollout": ("0 22 * * *", "overnight_rollout"),
    "rerun-wave": (None, "rerun_wave"),
    "raise-quota": (None, "raise_quota_flow"),
    "daily-payouts": ("0 2 * * *", "daily_payouts"),
}


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def entries(project) -> dict[str, dict]:
    return {d["name"]: d for d in project["deployments"]}


def test_every_deployment_of_operations_md_is_declared(entries):
    assert set(entries) == set(WANTED) == {d.name for d in DEPLOYMENTS}
    for name, entry in entries.items():
        assert set(entry) <= DEPLOYMENT_KEYS, f"{name}: unknown keys {set(entry) - DEPLOYMENT_KEYS}"
        assert entry["work_pool"]["name"] == POOL
        assert entry["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        assert "prakerja" in entry["tags"]


def test_schedules_are_jakarta_crons(entries):
    for name, (cron, _) in WANTED.items():
        schedules = entries[name]["schedules"]
        if cron is None:
            assert schedules == []
            continue
        assert schedules == [{"cron": cron, "timezone": TIMEZONE, "active": True}]
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=cron, timezone=TIMEZONE)  # valid for Prefect


def test_entrypoints_import_and_name_their_flows(entries):
    from prefect.flows import load_flow_from_entrypoint

    for name, entry in entries.items():
        path, attr = entry["entrypoint"].split(":")
        assert (ROOT / path).is_file()
        assert attr == WANTED[name][1]
        flow = load_flow_from_entrypoint(str(ROOT / path) + ":" + attr, use_placeholder_flow=False)
        assert flow.name == name  # the deployment is `<name>/<name>`
        spec = next(d for d in DEPLOYMENTS if d.name == name)
        assert spec.entrypoint == entry["entrypoint"]


def _schema(attr: str) -> dict:
    from prefect.utilities.callables import parameter_schema

    from flows import operations

    return parameter_schema(getattr(operations, attr)).model_dump()


def test_rerun_wave_parameters_are_typed_for_the_ui_form():
    schema = _schema("rerun_wave")
    props = schema["properties"]
    assert schema["required"] == ["wave_id"]
    assert props["wave_id"]["type"] == "integer" and props["wave_id"]["minimum"] == 1
    assert props["wave_id"]["description"]
    stage_ref = props["stages"]["anyOf"][0]["items"]["$ref"].rsplit("/", 1)[1]
    assert schema["definitions"][stage_ref]["enum"] == [s.value for s in Stage]
    assert props["stages"]["default"] is None and props["stages"]["description"]
    assert props["draw_without_pending"]["type"] == "boolean"
    assert props["draw_without_pending"]["default"] is False


def test_raise_quota_and_the_scheduled_flows_have_bounds_and_descriptions():
    props = _schema("raise_quota_flow")["properties"]
    assert props["quota"]["minimum"] == 1 and props["wave_id"]["minimum"] == 1
    rollout = _schema("overnight_rollout")["properties"]
    assert rollout["batches_per_step"]["minimum"] == 1
    assert rollout["max_pause_seconds"]["minimum"] == 0
    weekly = _schema("weekly_wave")["properties"]
    assert weekly["credit_overnight"]["default"] is True
    for props in (_schema(a)["properties"] for _, a in WANTED.values()):
        assert all(p.get("description") for p in props.values())


def test_a_wrong_parameter_is_refused_before_the_flow_runs():
    from prefect.exceptions import ParameterTypeError

    from flows.operations import raise_quota_flow, rerun_wave

    with pytest.raises(ParameterTypeError, match="wave_id"):
        rerun_wave.validate_parameters({"wave_id": 0})
    with pytest.raises(ParameterTypeError, match="stages"):
        rerun_wave.validate_parameters({"wave_id": 1, "stages": ["lottery"]})
    with pytest.raises(ParameterTypeError, match="quota"):
        raise_quota_flow.validate_parameters({"wave_id": 1, "quota": 0})
    ok = rerun_wave.validate_parameters({"wave_id": 2, "stages": ["screening", "draw"]})
    assert ok["stages"] == [Stage.SCREENING, Stage.DRAW]


def test_serve_builds_the_same_deployments():
    from deployments.serve import runner_deployments

    built = {d.name: d for d in runner_deployments()}
    assert set(built) == set(WANTED)
    for name, (cron, _) in WANTED.items():
        d = built[name]
        crons = [(s.schedule.cron, s.schedule.timezone) for s in d.schedules or []]
        assert crons == ([(cron, TIMEZONE)] if cron else [])
        assert d.concurrency_limit == 1
        assert d.concurrency_options.collision_strategy == "ENQUEUE"
        assert "prakerja" in d.tags and d.enforce_parameter_schema
        assert d.entrypoint == next(s.entrypoint for s in DEPLOYMENTS if s.name == name)
        assert d.flow_name == name


def test_ops_setup_needs_a_prefect_server_and_an_alert_target(tmp_path):
    import os

    from tests.cli_process import run_cli

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PRAKERJA_"))}
    env["PREFECT_HOME"] = str(tmp_path)
    result = run_cli(["ops", "setup"], env, timeout=120)
    assert result.returncode == 2 and "PREFECT_API_URL" in result.stderr
