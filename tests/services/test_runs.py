"""The run service (services/runs.py): every entry point's start of a run, on a real
database, with the wave flow handed in as a recorder (the flow itself is tested end to
end elsewhere). What an operator relies on: bad input changes nothing, a closed or busy
wave runs nothing, the lease is held while the flow runs and released after, sign-off
approved meanwhile runs the wave again, and each run is audited once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models.enums import Stage, WaveStatus
from models.tables import AuditEntry, Wave
from readmodels.summaries import CloseResult, SignOffStatus, WaveSummary
from runtime import app as runtime
from services.runs import RunEnd, WaveRun, raise_quota, run_wave, start_wave_run
from tasks.waves import acquire_lease, release_lease
from tests.tasks.factories import make_wave, person, write_export


class Flow:
    """Stands for flows/wave.py run_wave_flow: records each call and what the wave's
    lease was meanwhile; answers with the summaries given, in turn."""

    def __init__(self, sessions, *summaries: WaveSummary) -> None:
        self.sessions, self.summaries, self.calls = sessions, list(summaries), []

    def __call__(self, wave_id: int, **options) -> WaveSummary:
        with self.sessions() as session:
            owner = session.get(Wave, wave_id).lease_owner
        self.calls.append({"lease_owner": owner, **options})
        return self.summaries.pop(0) if self.summaries else done(wave_id)


def done(wave_id: int, **report) -> WaveSummary:
    return WaveSummary(wave_id=wave_id, report={"outcomes": {}, "pending": {}, **report})


def waiting_for_sign_off(wave_id: int) -> WaveSummary:
    status = SignOffStatus(wave_id=wave_id, required=1, approved=False, waiting=True)
    return WaveSummary(wave_id=wave_id, sign_off=status, report={"outcomes": {}})


def audit_actions(sessions) -> list[str]:
    with sessions() as session:
        rows = session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars()
        return list(rows)


@pytest.fixture
def app(sessions):
    return runtime.current()


def test_a_new_wave_is_created_audited_and_run_under_its_lease(app, sessions, tmp_path):
    export = write_export(tmp_path / "w.csv", [person(i) for i in range(3)])
    flow = Flow(sessions)
    outcome = start_wave_run(
        app, WaveRun(1, registrants=str(export), settings={"quota": 2}), run_flow=flow
    )
    assert (outcome.end, outcome.created) == (RunEnd.DONE, True)
    assert len(flow.calls) == 1 and flow.calls[0]["lease_owner"]  # held while it ran
    assert flow.calls[0]["registrants_path"] == str(export.resolve())
    assert flow.calls[0]["execution"] == app.execution
    with sessions() as session:
        assert session.get(Wave, 1).lease_owner is None  # released after
    assert audit_actions(sessions) == ["wave.created", "wave.run"]


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (WaveRun(1, settings={"quota": 5}), "--registrants: wave 1 does not exist yet"),
        (WaveRun(1, registrants="/nowhere.csv"), "--registrants: no such file"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(app, sessions, request_, says):
    flow = Flow(sessions)
    outcome = start_wave_run(app, request_, run_flow=flow)
    assert outcome.end == RunEnd.REFUSED and says in outcome.message
    assert flow.calls == [] and audit_actions(sessions) == []
    with sessions() as session:
        assert session.get(Wave, 1) is None


def test_a_closed_wave_runs_nothing(app, sessions):
    make_wave(sessions, 1)
    with sessions() as session, session.begin():
        session.get(Wave, 1).status = WaveStatus.CLOSED
    flow = Flow(sessions)
    outcome = start_wave_run(app, WaveRun(1), run_flow=flow)
    assert outcome.end == RunEnd.CLOSED and "is closed: nothing to do" in outcome.message
    assert flow.calls == [] and audit_actions(sessions) == []


def test_a_busy_wave_runs_nothing_and_is_not_audited(app, sessions):
    make_wave(sessions, 1)
    held = acquire_lease(sessions, 1)  # a live run on this host
    try:
        flow = Flow(sessions)
        outcome = start_wave_run(app, WaveRun(1, keep_open=True), run_flow=flow)
    finally:
        release_lease(sessions, 1, held)
    assert outcome.end == RunEnd.BUSY and "another live process" in outcome.message
    assert flow.calls == [] and audit_actions(sessions) == []
    with sessions() as session:
        assert session.get(Wave, 1).keep_open is False  # a refused run changed nothing


def test_pending_registrants_or_work_left_end_as_pending(app, sessions):
    make_wave(sessions, 1)
    pending = done(1, outcomes={"PENDING": 4}, pending={"PENDING_IDENTITY": 4})
    outcome = run_wave(app, 1, run_flow=Flow(sessions, pending))
    assert outcome.end == RunEnd.PENDING and outcome.summary.pending == 4
    left = WaveSummary(wave_id=1, close=CloseResult(work_left={"SMS_QUEUED": 3}))
    assert run_wave(app, 1, run_flow=Flow(sessions, left)).end == RunEnd.PENDING


def test_a_wave_waiting_for_sign_off_ends_so_or_runs_again_once_approved(app, sessions):
    make_wave(sessions, 1)
    flow = Flow(sessions, waiting_for_sign_off(1))
    outcome = run_wave(app, 1, run_flow=flow, stages=[Stage.ROLLOUT])
    assert outcome.end == RunEnd.SIGN_OFF and len(flow.calls) == 1

    asked = []

    def approved_meanwhile(wave_id, summary):
        with sessions() as session:  # asked outside the lease: nothing held while waiting
            asked.append(session.get(Wave, wave_id).lease_owner)
        return summary.waits_for_sign_off

    flow = Flow(sessions, waiting_for_sign_off(1), done(1))
    outcome = run_wave(app, 1, run_flow=flow, registrants="x.csv", sign_off=approved_meanwhile)
    assert outcome.end == RunEnd.DONE and asked == [None]
    assert [c["registrants_path"] is not None for c in flow.calls] == [True, False]
    assert all(c["lease_owner"] for c in flow.calls)


def test_a_failed_flow_is_one_line_and_the_lease_is_released(app, sessions):
    make_wave(sessions, 1)

    def failing(wave_id, **_):
        raise RuntimeError("the registry is down")

    outcome = run_wave(app, 1, run_flow=failing)
    assert outcome.end == RunEnd.FAILED
    assert outcome.message == "wave 1 failed: RuntimeError: the registry is down"
    with sessions() as session:
        assert session.get(Wave, 1).lease_owner is None
    with pytest.raises(RuntimeError, match="registry is down"):
        run_wave(app, 1, run_flow=failing, reraise=True)  # a deployment's run fails with it


def test_raise_quota_raises_under_the_lease_then_runs(app, sessions):
    make_wave(sessions, 1, quota=10)
    flow = Flow(sessions)
    seen = []
    outcome = raise_quota(
        app, 1, 25, run_flow=flow, by="ani", on_raised=lambda old, new: seen.append((old, new))
    )
    assert outcome.end == RunEnd.DONE and outcome.quota == (10, 25) and seen == [(10, 25)]
    assert len(flow.calls) == 1
    with sessions() as session:
        assert session.get(Wave, 1).quota == 25
    assert audit_actions(sessions) == ["wave.run", "wave.quota.raised"]


def test_raise_quota_refuses_a_lower_quota_or_a_closed_wave(app, sessions):
    make_wave(sessions, 1, quota=10)
    flow = Flow(sessions)
    lower = raise_quota(app, 1, 5, run_flow=flow)
    assert lower.end == RunEnd.REFUSED and "below wave 1's quota" in lower.message
    assert flow.calls == []
    with sessions() as session, session.begin():
        session.get(Wave, 1).status = WaveStatus.CLOSED
    closed = raise_quota(app, 1, 50, run_flow=flow)
    assert closed.end == RunEnd.REFUSED and "is closed" in closed.message
    with sessions() as session:
        assert session.get(Wave, 1).quota == 10
