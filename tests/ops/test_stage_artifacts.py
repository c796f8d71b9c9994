"""Stage artifacts on a real Prefect (test) server: each shows the wave's state at its
stage, from the database; a rerun with nothing to do there publishes that state again,
never an empty table; the draw stage and the draw facts have their own keys."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest


@pytest.fixture(autouse=True)
def _no_flow_heartbeats():
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _artifacts(key: str, since: datetime) -> list:
    """The versions of `key` made since `since`: the session's Prefect server also holds
    those of other tests (and of this test's other database) under the same key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return sorted((a for a in found if a.created >= since), key=lambda a: a.created)


def test_stage_artifacts_show_the_wave_state_and_survive_an_idle_rerun(
    prefect_server, database_url, tmp_path, monkeypatch
):
    from flows.operations import rerun_wave
    from models.enums import Stage
    from partners.simulator.generate import generate_export
    from readmodels.reporting import wave_report
    from rules.settings import WaveSettings
    from runtime import app as runtime
    from tasks.intake import file_sha256
    from tasks.waves import create_or_resume_wave
    from tests.faults.conftest import SEED, Simulator, fast_partners

    monkeypatch.setenv("PRAKERJA_WORKER_PROCESSES", "0")
    export = tmp_path / "wave.csv"
    generate_export(export, registrants=120, seed=SEED, reference_date=date(2026, 11, 28))
    sim = Simulator()
    sim.thread.start()
    early = [Stage.INTAKE, Stage.LOCAL_ELIGIBILITY, Stage.IDENTITY, Stage.SCREENING, Stage.DRAW]
    try:
        rt = runtime.configure(database=database_url, partners_config=fast_partners(sim.base_url))
        settings = WaveSettings(
            wave_id=1, quota=30, lottery_seed="artifacts", reference_date=date(2026, 11, 28)
        )
        create_or_resume_wave(
            rt.sessions,
            settings,
            source_path=str(export),
            source_sha256=file_sha256(export),
            given={"quota", "lottery_seed"},
            keep_open=True,
        )
        since = datetime.now(UTC)
        rerun_wave(wave_id=1, stages=early)
        with rt.sessions() as session:
            report = wave_report(session, 1)
        first = {s: _artifacts(f"wave-1-stage-{s.value}", since) for s in early}
        rerun_wave(wave_id=1, stages=early)  # nothing left to do in any of them
        second = {s: _artifacts(f"wave-1-stage-{s.value}", since) for s in early}
    finally:
        sim.http.close()
        sim.thread.stop()

    f = report["funnel"]
    expected = {
        Stage.INTAKE: [
            f"| registered | {f['registered']} |",
            f"| passed | {f['intake_accepted']} |",
        ],
        Stage.LOCAL_ELIGIBILITY: [f"| passed | {f['locally_eligible']} |"],
        Stage.IDENTITY: [f"| passed | {f['identity_verified']} |"],
        Stage.SCREENING: [f"| passed | {f['eligible']} |"],
        Stage.DRAW: [
            f"| reached this stage | {f['eligible']} |",
            f"| selected | {f['selected']} |",
        ],
    }
    assert f["registered"] == 120 and f["selected"] > 0
    for stage in early:
        assert len(first[stage]) == 1 and len(second[stage]) == 2, stage
        for version in (first[stage][-1], second[stage][-1]):
            for line in expected[stage]:
                assert line in version.data, (stage, version.data)
        if stage == Stage.INTAKE:  # the export is read again, every row already loaded
            assert "| skipped | 120 |" in second[stage][-1].data
        else:
            assert "Nothing to do for this stage in this run." in second[stage][-1].data
        assert "Nothing to do" not in first[stage][-1].data, (stage, first[stage][-1].data)
    # the draw facts keep their own key, apart from the draw stage's artifact
    facts = _artifacts("wave-1-draw", since)
    assert facts and all("The wave at this stage" not in a.data for a in facts)
    assert "lottery seed SHA-256" in facts[-1].data
