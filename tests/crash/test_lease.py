"""The wave's lease: a dead run never holds the next one up for more than 60 s, a live one
is never taken over. (The kill tests show the same with real `wave run` processes.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

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


# A holder on another host, in lease_owner_for's format (host:pid:start:host-id:token).
STEALER = "other-host:4242:1:0123456789abcdef:0badc0de"


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
                con.execute("UPDATE wave SET lease_owner = ?", (STEALER,))
            con.close()
            assert run.wait(40) == 1, run.tail()
            assert time.monotonic() - took < 15 + 10
            assert "another run took over its lease" in run.stderr()
            assert db.one("SELECT status FROM wave WHERE wave_id=1") == "OPEN"  # cut short
            assert db.lease_owner() == STEALER  # left to its holder
        finally:
            run.kill()
    finally:
        sim.stop()


# ---------------------------------------------------------------- hosts and clocks
def _db_clock(conn, plus_s: float = 0.0):
    """The database's own clock (naive UTC), written here so the tests do not lean on the
    code they check."""
    from sqlalchemy import DateTime, literal_column

    if conn.dialect.name == "sqlite":
        sql = f"strftime('%Y-%m-%d %H:%M:%f000', 'now', '{plus_s:+.3f} seconds')"
    else:
        sql = f"((clock_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => {plus_s:.3f}))"
    return literal_column(sql, DateTime)


def _hold_foreign(sessions, owner: str, expires_in_s: float) -> None:
    from models.tables import Wave

    with sessions() as session, session.begin():
        conn = session.connection()
        conn.execute(
            update(Wave.__table__)
            .where(Wave.__table__.c.wave_id == 1)
            .values(lease_owner=owner, lease_expires_at=_db_clock(conn, expires_in_s))
        )


def _expires_in_s(sessions) -> float:
    """Seconds from the database's now to the wave's lease expiry."""
    from datetime import datetime

    from sqlalchemy import select

    from models.tables import Wave

    w = Wave.__table__
    with sessions() as session:
        conn = session.connection()
        expires, now = conn.execute(
            select(w.c.lease_expires_at, _db_clock(conn)).where(w.c.wave_id == 1)
        ).one()
    if isinstance(now, str):  # SQLite hands a literal column back as text
        now = datetime.fromisoformat(now)
    return (expires - now).total_seconds()


@pytest.fixture
def skewed_clock(monkeypatch):
    """This process's clock `skew` seconds off (what `utcnow` and `time.time` say)."""
    import tasks.common
    import tasks.waves

    def skew(seconds: float) -> None:
        real_utcnow, real_time = tasks.common.utcnow, time.time
        monkeypatch.setattr(
            tasks.common, "utcnow", lambda: real_utcnow() + timedelta(seconds=seconds)
        )
        monkeypatch.setattr(tasks.waves, "utcnow", tasks.common.utcnow, raising=False)
        monkeypatch.setattr(time, "time", lambda: real_time() + seconds)

    return skew


def test_a_fast_clock_does_not_take_a_live_lease_held_elsewhere(sessions, wave, skewed_clock):
    """The holder elsewhere renewed 30 s ago by the database's clock; this host's clock is
    10 minutes ahead: by its own clock the lease has long expired, by the database's not."""
    from tasks.waves import WaveBusyError, acquire_lease

    holder = "other-host:4242:1:0123456789abcdef:0badc0de"
    _hold_foreign(sessions, holder, 30)
    skewed_clock(600)
    with pytest.raises(WaveBusyError):
        acquire_lease(sessions, 1, wait_s=0, sleep=lambda s: time.sleep(0.1))
    assert _owner(sessions) == holder


@pytest.mark.parametrize("skew_s", [600, -600], ids=["ahead", "behind"])
def test_a_skewed_clock_writes_the_expiry_of_the_database_clock(
    sessions, wave, skewed_clock, skew_s
):
    """Ahead, it would keep a dead run's lease for 11 minutes; behind, its live lease would
    look expired to every other host at once. Both must write now + 60 s by the database."""
    from models.tables import Wave
    from tasks.waves import LEASE_SECONDS, WaveBusyError, acquire_lease, renew_lease

    skewed_clock(skew_s)
    lease = acquire_lease(sessions, 1, wait_s=0)
    assert LEASE_SECONDS - 10 <= _expires_in_s(sessions) <= LEASE_SECONDS + 1
    assert renew_lease(sessions, 1, lease)
    assert LEASE_SECONDS - 10 <= _expires_in_s(sessions) <= LEASE_SECONDS + 1
    # Seen from another host with a right clock, that lease is live: not taken.
    disguised = "other-host:4242:1:0123456789abcdef:0badc0de"
    with sessions() as session, session.begin():
        session.connection().execute(
            update(Wave.__table__)
            .where(Wave.__table__.c.wave_id == 1)
            .values(lease_owner=disguised)
        )
    skewed_clock(-skew_s)  # back to the right time
    with pytest.raises(WaveBusyError):
        acquire_lease(sessions, 1, wait_s=0, sleep=lambda s: time.sleep(0.1))
    assert _owner(sessions) == disguised


_FOREIGN_HOLDER = """
import os, sys, time
# A run in another container that shares this hostname: its pid (from its own pid
# namespace) names no process here.
os.getpid = lambda: 4_000_007
from runtime import app as runtime
from tasks.waves import acquire_lease, renew_lease
rt = runtime.configure(database=sys.argv[1])
lease = acquire_lease(rt.sessions, 1, wait_s=0)
print("held", lease.owner, flush=True)
while True:  # its heartbeat, quick
    time.sleep(0.5)
    renew_lease(rt.sessions, 1, lease)
"""


def test_a_live_run_on_another_host_with_the_same_hostname_is_not_taken_over(
    sessions, wave, database_url, monkeypatch, tmp_path
):
    """Two hosts (containers, cloned machines) named alike: the holder's pid means nothing
    here, so it must not be judged dead by it; its lease is waited for, and it renews."""
    import os

    from tasks.waves import WaveBusyError, acquire_lease

    env = dict(os.environ, PRAKERJA_HOST_ID="host-a")
    log = tmp_path / "holder.out"
    with open(log, "w") as out:
        holder = subprocess.Popen(
            [sys.executable, "-c", _FOREIGN_HOLDER, database_url],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
    try:
        deadline = time.monotonic() + 60
        while "held" not in log.read_text():
            assert holder.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the holder never took the lease"
            time.sleep(0.1)
        owner = _owner(sessions)
        assert owner.startswith(f"{socket.gethostname()}:4000007:")
        monkeypatch.setenv("PRAKERJA_HOST_ID", "host-b")
        with pytest.raises(WaveBusyError):
            acquire_lease(sessions, 1, wait_s=1)
        assert _owner(sessions) == owner
        assert holder.poll() is None, log.read_text()
    finally:
        holder.kill()
        holder.wait()
