"""The wave's lease: a dead run never holds the next one up for more than 60 s, a live one
is never taken over. (The kill tests show the same with real `wave run` processes.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy import update

from tests.tasks.factories import make_wave


def _hold(sessions, owner: str, expires_in_s: float) -> None:
    """Another holder's lease, expiring `expires_in_s` from now by the database's clock."""
    from models.tables import Wave
    from tasks.waves import _db_now

    with sessions() as session, session.begin():
        conn = session.connection()
        conn.execute(
            update(Wave.__table__)
            .where(Wave.__table__.c.wave_id == 1)
            .values(lease_owner=owner, lease_expires_at=_db_now(conn.dialect.name, expires_in_s))
        )


def _here(pid: int, started: str = "", token: str = "cafef00d") -> str:
    """An owner on this host (same hostname and host identity)."""
    from tasks.waves import host_identity

    return f"{socket.gethostname()}:{pid}:{started}:{host_identity()}:{token}"


def _owner(sessions) -> str | None:
    from models.tables import Wave

    with sessions() as session:
        return session.get(Wave, 1).lease_owner


@pytest.fixture
def wave(sessions):
    return make_wave(sessions, 1)


@pytest.fixture
def virtual_clock(monkeypatch):
    """Sleeping advances a virtual clock that the lease code reads: this process's
    monotonic clock, and the database's clock (shifted by the virtual time)."""
    import tasks.waves

    start_mono = time.monotonic()
    clock = {"t": 0.0}
    db_now = tasks.waves._db_now
    monkeypatch.setattr(time, "monotonic", lambda: start_mono + clock["t"])
    monkeypatch.setattr(
        tasks.waves, "_db_now", lambda dialect, plus_s=0.0: db_now(dialect, plus_s + clock["t"])
    )

    def sleep(seconds: float) -> None:
        clock["t"] += seconds

    clock["sleep"] = sleep
    return clock


def test_a_dead_runs_lease_on_this_host_is_taken_at_once(sessions, wave):
    from tasks.waves import LEASE_SECONDS, acquire_lease

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process now
    _hold(sessions, _here(dead.pid, token="deadbeef"), LEASE_SECONDS)
    started = time.monotonic()
    lease = acquire_lease(sessions, 1)
    assert time.monotonic() - started < 2
    assert _owner(sessions) == lease.owner


def test_a_live_run_on_this_host_is_refused_at_once(sessions, wave):
    from tasks.waves import LEASE_SECONDS, WaveBusyError, acquire_lease

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = _here(live.pid)
        _hold(sessions, owner, LEASE_SECONDS)
        started = time.monotonic()
        with pytest.raises(WaveBusyError, match="another live process"):
            acquire_lease(sessions, 1)
        assert time.monotonic() - started < 2
        assert _owner(sessions) == owner
    finally:
        live.kill()
        live.wait()


def test_a_live_run_on_this_host_is_not_taken_over_when_its_heartbeat_is_late(sessions, wave):
    from tasks.waves import WaveBusyError, _process_start, acquire_lease

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for owner in (
            _here(live.pid, _process_start(live.pid)),
            _here(live.pid),  # its start time unknown
        ):
            _hold(sessions, owner, -5)  # its lease ran out a moment ago
            with pytest.raises(WaveBusyError, match="another live process"):
                acquire_lease(sessions, 1)
            assert _owner(sessions) == owner
    finally:
        live.kill()
        live.wait()


def test_a_dead_runs_pid_used_by_another_process_does_not_hold_the_wave(sessions, wave):
    from tasks.waves import LEASE_SECONDS, acquire_lease

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # The holder died; its pid now names another process (started at another time).
        _hold(sessions, _here(other.pid, "1", "deadbeef"), LEASE_SECONDS)
        started = time.monotonic()
        lease = acquire_lease(sessions, 1)
        assert time.monotonic() - started < 2
        assert _owner(sessions) == lease.owner
    finally:
        other.kill()
        other.wait()


def test_a_run_elsewhere_that_died_is_waited_out_within_the_lease(sessions, wave, virtual_clock):
    from tasks.waves import LEASE_SECONDS, acquire_lease

    # It renewed its lease just before dying: the longest possible wait.
    _hold(sessions, "other-host:4242:0badc0de", LEASE_SECONDS)
    lease = acquire_lease(sessions, 1, sleep=virtual_clock["sleep"])
    assert _owner(sessions) == lease.owner
    assert LEASE_SECONDS <= virtual_clock["t"] <= LEASE_SECONDS + 2


def test_a_run_elsewhere_that_keeps_renewing_is_never_taken_over(sessions, wave, virtual_clock):
    from tasks.waves import LEASE_SECONDS, Lease, WaveBusyError, acquire_lease, renew_lease

    holder = Lease("other-host:4242:0badc0de")
    _hold(sessions, holder.owner, LEASE_SECONDS)
    beats = {"since": 0.0}

    def sleep(seconds: float) -> None:
        virtual_clock["sleep"](seconds)
        beats["since"] += seconds
        if beats["since"] >= 15:  # the holder's heartbeat
            beats["since"] = 0.0
            assert renew_lease(sessions, 1, holder)

    with pytest.raises(WaveBusyError):
        acquire_lease(sessions, 1, sleep=sleep)
    assert _owner(sessions) == holder.owner
    assert virtual_clock["t"] <= LEASE_SECONDS + 3


def test_a_wave_another_run_created_meanwhile_is_resumed_not_failed(sessions, monkeypatch):
    """Two runs start a new wave at once: the one whose insert loses resumes the wave."""
    from datetime import date

    from sqlmodel import Session

    from rules.settings import WaveSettings
    from tasks.waves import create_or_resume_wave

    make_wave(sessions, 1, quota=10, lottery_seed="seed")  # the other run's wave
    real_get = Session.get
    reads = []

    def get(self, entity, ident, *args, **kwargs):
        reads.append(ident)
        if len(reads) == 1:
            return None  # our read came just before the other run's insert
        return real_get(self, entity, ident, *args, **kwargs)

    monkeypatch.setattr(Session, "get", get)
    settings = WaveSettings(
        wave_id=1, quota=10, lottery_seed="seed", reference_date=date(2026, 11, 28)
    )
    wave, created = create_or_resume_wave(
        sessions, settings, source_path=None, source_sha256=None, given={"quota"}
    )
    assert created is False and wave.wave_id == 1


def test_a_run_whose_lease_another_run_took_stops_at_its_next_heartbeat(
    crash_wave, run_env, tmp_path
):
    """Its lease ran out (say, a long stall) and a run elsewhere took the wave: the first
    run must stop rather than run beside it."""
    import sqlite3

    from tests.crash.conftest import (
        ProgramDB,
        Sim,
        WaveProcess,
        partners_file,
        wait_until,
        wave_run_args,
    )

    sim = Sim(tmp_path, {"partners": {"card-issuer": {"latency_ms": 3000}}}).start()
    try:
        overrides = {"card_issuer": {"max_concurrency": 1}}
        env = dict(
            run_env,
            PRAKERJA_PARTNERS=str(partners_file(tmp_path / "p.toml", sim.base_url, overrides)),
        )
        db = ProgramDB(tmp_path / "program.db")
        run = WaveProcess(wave_run_args(crash_wave.export), env, tmp_path, "run-1")
        try:
            wait_until(lambda: run.owns_lease(db), "the run takes the lease", run=run)
            took = time.monotonic()
            con = sqlite3.connect(db.path, timeout=30)
            with con:
                con.execute("UPDATE wave SET lease_owner = 'other-host:4242::0badc0de'")
            con.close()
            assert run.wait(40) == 1, run.tail()
            assert time.monotonic() - took < 15 + 10
            assert "another run took over its lease" in run.stderr()
            assert db.one("SELECT status FROM wave WHERE wave_id=1") == "OPEN"  # cut short
            assert db.lease_owner() == "other-host:4242::0badc0de"  # left to its holder
        finally:
            run.kill()
    finally:
        sim.stop()
