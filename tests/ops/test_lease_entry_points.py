"""One lease, held the same way by every entry point (services/lease.py): a deployment run
whose lease another run took stops before its next write; `raise-quota` and a refused
`wave run` change nothing they should not."""

from __future__ import annotations

import importlib.util
import time
from datetime import date

import pytest
from sqlalchemy import func, select, update

from tests.tasks.factories import make_wave

THIEF = "other-host:4242:1:0123456789abcdef:0badc0de"
HAS_LEASE_MODULE = importlib.util.find_spec("services.lease") is not None


@pytest.fixture(autouse=True)
def _no_flow_heartbeats():
    """Prefect joins each flow run's heartbeat thread on exit, up to a second per subflow."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _steal(engine, wave_id: int = 1) -> None:
    """Another run takes the wave (as it may once our lease ran out)."""
    from models.tables import Wave

    w = Wave.__table__
    with engine.begin() as conn:
        conn.execute(update(w).where(w.c.wave_id == wave_id).values(lease_owner=THIEF))


def _wave(sessions, wave_id: int = 1):
    from models.tables import Wave

    with sessions() as session:
        return session.get(Wave, wave_id)


# ---------------------------------------------------------------- a deployment run
def _snapshot(engine) -> dict:
    """Everything a wave run writes, but the lease."""
    from models.tables import LedgerEntry, Message, Registrant, Wave

    L, M, R, W = (t.__table__ for t in (LedgerEntry, Message, Registrant, Wave))
    with engine.connect() as conn:
        return {
            "ledger": sorted(
                conn.execute(
                    select(L.c.status, func.count(), func.sum(L.c.attempts)).group_by(L.c.status)
                ).all()
            ),
            "ledger_updated": conn.execute(select(func.max(L.c.updated_at))).scalar(),
            "states": sorted(
                conn.execute(select(R.c.state, func.count()).group_by(R.c.state)).all()
            ),
            "messages": conn.execute(select(func.count()).select_from(M)).scalar(),
            "wave": conn.execute(
                select(W.c.status, W.c.quota, W.c.keep_open, W.c.closed_at, W.c.seats_json)
            ).all(),
        }


class _StealAtCredit:
    """ASGI middleware on the simulator: at the issuer's n-th credit request, another run
    takes the wave's lease (our run is then between its ledger write and its answer)."""

    def __init__(self, app, at: int, on_steal, calls: dict) -> None:
        self.app, self.at, self.on_steal, self.calls = app, at, on_steal, calls

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/issuer/v1/credits"
        ):
            self.calls["credit"] = self.calls.get("credit", 0) + 1
            if self.calls["credit"] == self.at:
                self.on_steal()
        await self.app(scope, receive, send)


def test_a_deployment_run_that_lost_its_lease_stops_before_its_next_write(
    prefect_server, database_url, tmp_path, monkeypatch
):
    """The rerun-wave deployment crediting a wave: its heartbeat was held up (a pause, a
    database outage) past its lease, and another run took the wave. Ours must write
    nothing more (the batch in flight rolls back; the new holder looks the credit up
    before re-sending), send no further credit, and fail saying why."""

    import flows.wave
    from flows.operations import rerun_wave
    from models.db import make_engine
    from models.enums import Stage
    from partners.simulator.generate import generate_export
    from rules.settings import WaveSettings
    from runtime import app as runtime
    from tasks.intake import file_sha256
    from tasks.waves import create_or_resume_wave
    from tests.faults.conftest import SEED, Simulator, fast_partners

    monkeypatch.setenv("PRAKERJA_WORKER_PROCESSES", "0")
    export = tmp_path / "wave.csv"
    generate_export(export, registrants=120, seed=SEED, reference_date=date(2026, 11, 28))
    observer = make_engine(database_url)  # another process's view of the database
    seen: dict = {}
    calls: dict = {}

    def steal() -> None:
        _steal(observer)
        seen["at_steal"] = _snapshot(observer)

    sim = Simulator()
    sim.thread.app.add_middleware(_StealAtCredit, at=3, on_steal=steal, calls=calls)
    sim.thread.start()
    try:
        rt = runtime.configure(database=database_url, partners_config=fast_partners(sim.base_url))
        settings = WaveSettings(
            wave_id=1, quota=30, lottery_seed="lease-lottery", reference_date=date(2026, 11, 28)
        )
        create_or_resume_wave(
            rt.sessions,
            settings,
            source_path=str(export),
            source_sha256=file_sha256(export),
            given={"quota", "lottery_seed"},
            keep_open=True,
        )
        before_rollout = [s for s in Stage if s not in (Stage.ROLLOUT, Stage.ANNOUNCE)]
        rerun_wave(wave_id=1, stages=before_rollout)
        assert _wave(rt.sessions).lease_owner is None  # released after a normal run
        confirmed = dict(_snapshot(observer)["states"]).get("CONFIRMED", 0)
        assert confirmed >= 10

        # Credit batches of 3, one at a time; the lease looked stale at every statement
        # (its heartbeat held up), so each write first checks who holds the wave.
        monkeypatch.setattr(rt, "settings", rt.settings.model_copy(update={"batch_size": 3}))
        monkeypatch.setattr(flows.wave, "partner_threads", lambda _execution: 1)
        if HAS_LEASE_MODULE:
            monkeypatch.setattr("services.lease.LEASE_RENEW_S", 3600.0)
            monkeypatch.setattr("services.lease.LEASE_STALE_S", 0.0)
        started = time.monotonic()
        state = rerun_wave(wave_id=1, stages=[Stage.ROLLOUT], return_state=True)
        took = time.monotonic() - started
    finally:
        sim.http.close()
        sim.thread.stop()
    after = _snapshot(observer)
    observer.dispose()
    assert "at_steal" in seen, "the run never reached its third credit request"
    assert after == seen["at_steal"], "the run wrote after another run took its lease"
    assert calls["credit"] == 3, "credits were sent after the lease was lost"
    assert state.is_failed(), state
    assert "another run took over its lease" in (state.message or ""), state.message
    assert _wave(rt.sessions).lease_owner == THIEF  # left to its new holder
    assert took < 60


def test_a_deployment_lease_found_lost_by_its_heartbeat_stops_every_write(sessions, monkeypatch):
    """The heartbeat's renewal finds another owner: from then on this process's writes
    to the program database fail (LeaseLost), until the run ends; the lease is left to
    its new holder."""
    from models.tables import Wave
    from services.runs import wave_lease

    make_wave(sessions, 1)
    monkeypatch.setattr("flows.operations.LEASE_RENEW_S", 0.05, raising=False)
    if HAS_LEASE_MODULE:
        monkeypatch.setattr("services.lease.LEASE_RENEW_S", 0.05)
    from runtime.app import get_runtime

    engine = get_runtime().engine
    with wave_lease(get_runtime(), 1, wait_s=0):
        _steal(engine)
        deadline = time.monotonic() + 5
        refused = None
        while refused is None and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                with sessions() as session, session.begin():
                    session.execute(update(Wave).values(keep_open=True))
            except Exception as exc:  # noqa: BLE001 - LeaseLost, whatever wraps it
                refused = exc
        assert refused is not None, "writes went on after another run took the lease"
        assert "another run took over its lease" in str(refused)
    assert _wave(sessions).lease_owner == THIEF


# ---------------------------------------------------------------- raise-quota, wave run
def _cli(args: list[str]):
    from click.testing import CliRunner

    from cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_raise_quota_refused_by_a_busy_wave_leaves_it_unchanged(sessions):
    from tasks.waves import acquire_lease, release_lease

    make_wave(sessions, 1, quota=10)
    before = _wave(sessions)
    held = acquire_lease(sessions, 1)  # a live `wave run` on this host
    try:
        result = _cli(["wave", "raise-quota", "--wave", "1", "--quota", "25"])
    finally:
        release_lease(sessions, 1, held)
    assert result.exit_code == 4, result.output
    assert "is being run by another live process" in result.output
    after = _wave(sessions)
    assert (after.quota, after.seats_json, after.status) == (
        before.quota,
        before.seats_json,
        before.status,
    )


def test_a_refused_wave_run_leaves_keep_open_unchanged(sessions):
    from cli import EXIT_BUSY, run_wave_command
    from partners.config import simulator_config
    from tasks.waves import acquire_lease, release_lease

    make_wave(sessions, 1)
    assert _wave(sessions).keep_open is False
    held = acquire_lease(sessions, 1)
    try:
        code = run_wave_command(
            wave_id=1,
            registrants=None,
            quota=None,
            lottery_seed=None,
            keep_open=True,
            draw_without_pending=False,
            flags={},
            partners_config=simulator_config("http://127.0.0.1:9"),
            quiet=True,
        )
    finally:
        release_lease(sessions, 1, held)
    assert code == EXIT_BUSY
    assert _wave(sessions).keep_open is False


def test_raise_quota_on_a_wave_closed_meanwhile_changes_nothing(
    sessions, database_url, monkeypatch
):
    """The wave closes (its run ends) between raise-quota's read and its write."""
    import tasks.draw
    from models.db import make_engine
    from models.tables import Wave
    from tasks.draw import QuotaError, raise_quota

    make_wave(sessions, 1, quota=10)
    other = make_engine(database_url)
    real_load = tasks.draw.load_wave

    def load_then_close(session, wave_id):
        wave = real_load(session, wave_id)
        with other.begin() as conn:
            conn.execute(update(Wave.__table__).values(status="CLOSED"))
        return wave

    monkeypatch.setattr(tasks.draw, "load_wave", load_then_close)
    try:
        with pytest.raises(QuotaError):
            raise_quota(sessions, 1, 20)
    finally:
        other.dispose()
    monkeypatch.undo()
    after = _wave(sessions)
    assert (after.status, after.quota) == ("CLOSED", 10)
    # And from the command line: refused (exit 2), unchanged.
    result = _cli(["wave", "raise-quota", "--wave", "1", "--quota", "20"])
    assert result.exit_code == 2, result.output
    assert _wave(sessions).quota == 10
