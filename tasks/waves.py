"""Creating and resuming waves, and the lease that keeps one wave to one live process."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass

from sqlalchemy import DateTime, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError

from models.db import SessionFactory
from models.enums import ReasonCode, State, WaveStatus
from models.tables import Wave
from readmodels.reporting import work_left
from rules.draw import seed_sha256
from rules.settings import SettingsError, WaveSettings, default_rollout_deadline
from tasks import audit
from tasks.audit import Actor
from tasks.common import R, load_wave, rebuilt_waitlist_index, utcnow

LEASE_SECONDS = 60
W = Wave.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LeaseTarget:
    """The row a lease lives on: a wave's own row, or the payout runs' one row
    (models/tables.py PayoutLease). The same lease, taken, renewed and released alike."""

    table_name: str
    key_column: str
    key: object
    label: str  # "wave 3", "a payout run": in the busy message

    @property
    def table(self):
        from sqlmodel import SQLModel

        return SQLModel.metadata.tables[self.table_name]

    def where(self):
        return self.table.c[self.key_column] == self.key


PAYOUT_LEASE = LeaseTarget("payout_lease", "name", "payout", "a payout run")


def lease_target(key: int | LeaseTarget) -> LeaseTarget:
    """A wave's id is its own row's lease."""
    if isinstance(key, LeaseTarget):
        return key
    return LeaseTarget("wave", "wave_id", key, f"wave {key}")


def create_or_resume_wave(
    sessions: SessionFactory,
    settings: WaveSettings,
    *,
    source_path: str | None,
    source_sha256: str | None,
    given: set[str],
    keep_open: bool = False,
    actor: Actor | None = None,
) -> tuple[Wave, bool]:
    """Returns (wave, created). A resumed wave keeps its settings: a flag that disagrees
    with them, or another export file, is refused rather than silently ignored.
    (`settings` were checked when they were made: WaveSettings refuses a bad value.)
    With `actor`, a wave made here is audited (`wave.created`) in the transaction that
    makes it: the wave and its audit row, or neither."""
    args = (sessions, settings, source_path, source_sha256, given, keep_open, actor)
    try:
        return _create_or_resume(*args)
    except IntegrityError:
        # Two runs started a new wave at once and the other one created it: resume it
        # (its lease then decides which of the two runs).
        return _create_or_resume(*args)


def _create_or_resume(sessions, settings, source_path, source_sha256, given, keep_open, actor):
    if source_sha256 is None:
        _check_stored_export(sessions, settings.wave_id)
    with sessions() as session, session.begin():
        if actor is not None:
            audit.lock(session)  # before the read (SQLite: a read cannot become a write)
        wave = session.get(Wave, settings.wave_id)
        if wave is not None:
            if source_sha256 and wave.source_sha256 and source_sha256 != wave.source_sha256:
                raise SettingsError(
                    f"registrants: wave {wave.wave_id} was started from another export "
                    f"(sha256 {wave.source_sha256[:12]}...); resume it with the same file"
                )
            for name in sorted(given):
                stored = getattr(wave, name)
                wanted = getattr(settings, name)
                if name == "lottery_seed":
                    same = seed_sha256(wanted) == wave.lottery_seed_sha256
                else:
                    same = str(stored) == str(wanted)
                if not same:
                    hint = " (use `prakerja wave raise-quota`)" if name == "quota" else ""
                    shown = "<recorded>" if name == "lottery_seed" else stored
                    raise SettingsError(
                        f"{name}: wave {wave.wave_id} already has {name}={shown}; "
                        f"a resumed wave keeps its settings{hint}"
                    )
            if keep_open != wave.keep_open:
                wave.keep_open = keep_open
                session.add(wave)
            return wave, False
        now = utcnow()
        wave = Wave(
            **{k: v for k, v in settings.as_dict().items()},
            lottery_seed_sha256=seed_sha256(settings.lottery_seed),
            rollout_deadline=default_rollout_deadline(settings.reference_date),
            status=WaveStatus.OPEN,
            keep_open=keep_open,
            created_at=now,
            source_path=source_path,
            source_sha256=source_sha256,
        )
        session.add(wave)
        if actor is not None:
            session.flush()
            audit.append(
                session, actor, "wave.created", wave_id=wave.wave_id, after=created_audit(wave)
            )
        return wave, True


def created_audit(wave: Wave) -> dict:
    """What `wave.created` records: the wave's settings, its seed only as a SHA-256."""
    shown = {
        name: getattr(wave, name)
        for name in WaveSettings.model_fields
        if name not in ("wave_id", "lottery_seed")
    }
    shown["lottery_seed_sha256"] = wave.lottery_seed_sha256
    shown["export_sha256"] = wave.source_sha256
    return shown


def _check_stored_export(sessions: SessionFactory, wave_id: int) -> None:
    """A resumed wave whose intake is unfinished reads the rest of the export it was started
    from again: refuse it (SettingsError) if that file changed or is gone, before anything
    is read from it or written. The message names the wave and the path, never a value."""
    from tasks.intake import file_sha256

    with sessions() as session:
        wave = session.get(Wave, wave_id)
        if wave is None or wave.intake_done or not wave.source_path or not wave.source_sha256:
            return
        path, stored = wave.source_path, wave.source_sha256
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise SettingsError(
            f"registrants: wave {wave_id} was started from {path}, which cannot be read "
            f"({exc.strerror or type(exc).__name__}); put that file back or name it with "
            "--registrants"
        ) from None
    if actual != stored:
        raise SettingsError(
            f"registrants: wave {wave_id} was started from {path}, which has changed since "
            f"(sha256 {stored[:12]}... then, {actual[:12]}... now); its intake is unfinished: "
            "put the original file back or name it with --registrants"
        )


@dataclass
class Lease:
    owner: str


class WaveBusyError(RuntimeError):
    """Another live process is running this wave."""


HOST_ID_ENV = "PRAKERJA_HOST_ID"
# Lease statements carry this execution option: the lease guard (services/lease.py) lets
# them through even when the process has lost a lease.
LEASE_STATEMENT = {"prakerja_lease": True}


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def host_identity() -> str:
    """What tells this machine (and container) apart from another with the same hostname:
    a digest of the boot id, the machine id and the pid namespace, where available.
    PRAKERJA_HOST_ID replaces it (tests simulate two hosts with it)."""
    from models.config import read_settings

    # Read at each call (a lease is taken rarely): tests switch hosts between two calls.
    override = (read_settings().host_id or "").strip()
    if override:
        return override.replace(":", "-")
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    parts = (
        _read_first_line("/proc/sys/kernel/random/boot_id"),
        _read_first_line("/etc/machine-id") or _read_first_line("/var/lib/dbus/machine-id"),
        pid_ns,
    )
    if not any(parts):
        return "unknown"
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _process_start(pid: int) -> str:
    """When process `pid` started (Linux: clock ticks after boot), "" where unknown. With
    the pid it names one process, even once the pid is reused by another."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def lease_owner_for(pid: int, token: str | None = None) -> str:
    """`host:pid:start:host-id:token`: the holder's hostname, process (pid and start time)
    and host identity (host_identity), and a token unique to this lease."""
    token = token or uuid.uuid4().hex[:8]
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}:{host_identity()}:{token}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for a holder on this host; None when it may run elsewhere (unknowable).

    "This host" means the same hostname *and* the same host identity (boot id, machine
    id, pid namespace): containers or cloned machines sharing a hostname are elsewhere,
    since a pid means nothing across them. An owner not in lease_owner_for's format
    (`host:pid:start:host-id:token`) counts as elsewhere: it is waited out (its lease),
    never judged by a pid."""
    host, _, rest = owner.partition(":")
    parts = rest.split(":")
    if len(parts) != 4:
        return None
    pid, started, hid, _token = parts
    if host != socket.gethostname() or hid != host_identity() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started and _process_start(int(pid)) not in (started, ""):
        return False  # the holder died and its pid now names another process
    return True


def _db_now(dialect: str, plus_s: float = 0.0):
    """The database's clock, naive UTC like every time the program stores, `plus_s`
    seconds on: lease expiry never depends on the clock of the host that writes it."""
    shift = float(plus_s)
    if dialect == "sqlite":
        # '%f' is SS.SSS; '000' makes the microseconds SQLAlchemy writes and compares.
        sql = f"strftime('%Y-%m-%d %H:%M:%f000', 'now', '{shift:+.3f} seconds')"
    elif dialect == "postgresql":
        sql = f"((clock_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => {shift:.3f}))"
    else:  # pragma: no cover - the program runs on SQLite and PostgreSQL
        sql = f"(CURRENT_TIMESTAMP + INTERVAL '{shift:.3f}' SECOND)"
    return literal_column(sql, DateTime)


def acquire_lease(
    sessions: SessionFactory,
    wave_id: int | LeaseTarget,
    *,
    wait_s: float = LEASE_SECONDS,
    sleep=None,
) -> Lease:
    """Takes the wave's lease; a dead holder's lease is taken at once on the same host,
    or after it expires (at most LEASE_SECONDS, by the database's clock) elsewhere; a
    live holder on this host means WaveBusyError at once."""
    import time

    sleep = sleep or time.sleep
    target = lease_target(wave_id)
    T = target.table
    owner = lease_owner_for(os.getpid())
    deadline = time.monotonic() + wait_s + 1
    while True:
        with sessions() as session, session.begin():
            conn = session.connection(execution_options=LEASE_STATEMENT)
            row = conn.execute(
                select(T.c.lease_owner).where(target.where()).execution_options(**LEASE_STATEMENT)
            ).first()
            holder = row[0] if row else None
            alive = _owner_alive(holder) if holder is not None else None
            takeover = holder is not None and alive is False
            now = _db_now(conn.dialect.name)
            cond = or_(T.c.lease_owner.is_(None), T.c.lease_expires_at < now)
            if takeover:
                cond = or_(cond, T.c.lease_owner == holder)
            if alive is True:
                # A live run on this host keeps the wave even when its heartbeat is late
                # and its lease ran out: two runs of one wave must never interleave.
                cond = T.c.lease_owner.is_(None)
            got = conn.execute(
                update(T)
                .where(target.where(), cond)
                .values(
                    lease_owner=owner,
                    lease_expires_at=_db_now(conn.dialect.name, LEASE_SECONDS),
                )
                .execution_options(**LEASE_STATEMENT)
            ).rowcount
        if got:
            return Lease(owner)
        if alive is True or time.monotonic() >= deadline:
            raise WaveBusyError(
                f"{target.label} is being run by another live process ({holder}); "
                "try again when it has finished"
            )
        sleep(2)


def renew_lease(sessions: SessionFactory, wave_id: int | LeaseTarget, lease: Lease) -> bool:
    """Moves the lease's expiry LEASE_SECONDS past the database's now; False when the
    lease is no longer ours (another run took it after it expired)."""
    target = lease_target(wave_id)
    T = target.table
    with sessions() as session, session.begin():
        conn = session.connection(execution_options=LEASE_STATEMENT)
        return bool(
            conn.execute(
                update(T)
                .where(target.where(), T.c.lease_owner == lease.owner)
                .values(lease_expires_at=_db_now(conn.dialect.name, LEASE_SECONDS))
                .execution_options(**LEASE_STATEMENT)
            ).rowcount
        )


def release_lease(sessions: SessionFactory, wave_id: int | LeaseTarget, lease: Lease) -> None:
    target = lease_target(wave_id)
    T = target.table
    with sessions() as session, session.begin():
        session.connection(execution_options=LEASE_STATEMENT).execute(
            update(T)
            .where(target.where(), T.c.lease_owner == lease.owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(**LEASE_STATEMENT)
        )


def close_wave_if_done(sessions: SessionFactory, wave_id: int, *, keep_open: bool) -> dict:
    """Closes a finished wave: the still-waitlisted become NOT_SELECTED / QUOTA_FULL."""
    with sessions() as session, session.begin():
        wave = load_wave(session, wave_id)
        left = work_left(session, wave_id)
        if wave.status == WaveStatus.CLOSED:
            return {"closed": True, "work_left": left}
        if left or keep_open or wave.drawn_at is None:
            return {"closed": False, "work_left": left}
        now = utcnow()
        with rebuilt_waitlist_index(session):  # the whole waitlist leaves it
            session.connection().execute(
                update(R)
                .where(R.c.wave_id == wave_id, R.c.state == State.WAITLISTED.value)
                .values(
                    state=State.NOT_SELECTED.value,
                    reason=ReasonCode.QUOTA_FULL.value,
                    decided_at=now,
                )
            )
        wave.status = WaveStatus.CLOSED
        wave.closed_at = now
        session.add(wave)
        return {"closed": True, "work_left": {}}


def refresh_statistics(sessions: SessionFactory) -> bool:
    """After a bulk stage on PostgreSQL: fresh planner statistics of the registrant table
    (ANALYZE samples it: about a second at six million rows). A plan made on statistics
    from before a bulk change (no drawn registrant before the draw, say) can turn a
    one-second statement into a quarter of an hour. SQLite's statements name their
    indexes where it matters; nothing to do there. True when refreshed."""
    with sessions() as session, session.begin():
        conn = session.connection()
        if conn.dialect.name != "postgresql":
            return False
        conn.exec_driver_sql("ANALYZE registrant")
    return True
