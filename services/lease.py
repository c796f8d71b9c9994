"""Holding a wave's lease: the one way every entry point (`prakerja wave run`,
`prakerja wave raise-quota`, each deployment) keeps one wave to one live process.

`hold_wave_lease(...)` takes the lease (tasks/waves.py), renews it every LEASE_RENEW_S
from a heartbeat thread, and releases it on exit. While it is held, every statement this
process sends to the program database passes a guard first (an SQLAlchemy
`before_cursor_execute` hook on the runtime's engine):

- once the lease is known lost (a renewal found another owner: our lease ran out during
  a pause or a database outage longer than LEASE_SECONDS, and another run took the wave),
  every statement raises `LeaseLost`: the batch that was writing rolls back, the task
  fails, and the run fails with the message "wave N: another run took over its lease";
- when the last confirmed renewal is older than LEASE_STALE_S (the heartbeat was held up:
  a paused process, a database outage), the guard first reads the wave's lease owner on
  the statement's own connection (no lock, no deadlock with the statement's transaction)
  and raises `LeaseLost` if it is no longer ours; so a run that wakes up after its lease
  was taken stops before its next write, not at its next heartbeat.

Then `on_lost` runs once (the CLI ends its process, exit 1, as before); worker processes
of this run (runtime/workers.py) are killed at once, rolling back their batch. A deployment
run (its own process under a worker or `prakerja serve`) is not killed: its tasks fail
with LeaseLost and the flow run ends Failed with that message (and its alert).

Limits: the check comes before a statement is sent, so a statement already past it when
the other run takes the wave still lands (the other run can only take a lease that has
expired, i.e. after LEASE_SECONDS without a renewal, and the guard checks the owner from
LEASE_STALE_S on); batches running on a Dask cluster are not guarded (their flow process
is: it stops at its next statement).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.engine import Engine

from models.db import SessionFactory
from tasks.waves import (
    LEASE_SECONDS,
    Lease,
    LeaseTarget,
    WaveBusyError,
    acquire_lease,
    lease_target,
    release_lease,
    renew_lease,
)

LEASE_RENEW_S = 15.0
# Past this long without a confirmed renewal, each statement checks the owner first.
LEASE_STALE_S = 40.0
log = logging.getLogger("prakerja")


class LeaseLost(RuntimeError):
    """This run's lease on the wave was taken by another run: it must write nothing more."""


@dataclass(eq=False)
class HeldLease:
    wave_id: int  # the wave, or for the payout runs' lease 0
    lease: Lease
    sessions: SessionFactory
    engine: Engine
    on_lost: Callable[[HeldLease], None] | None = None
    logger: logging.Logger | logging.LoggerAdapter = log
    confirmed_at: float = field(default_factory=time.monotonic)
    lost: str | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    target: LeaseTarget | None = None  # None: the wave's own row

    def check(self) -> None:
        """Raises LeaseLost once the lease is known lost."""
        if self.lost is not None:
            raise LeaseLost(self.lost)

    def mark_lost(self, how: str) -> None:
        with self._lock:
            if self.lost is not None:
                return
            who = self.target.label if self.target else f"wave {self.wave_id}"
            self.lost = (
                f"{who}: another run took over its lease ({how}); this run "
                "stopped before its next write and leaves the work to that run"
            )
        self.logger.error("%s", self.lost)
        kill_worker_processes()
        if self.on_lost is not None:
            self.on_lost(self)

    def stale(self) -> bool:
        return time.monotonic() - self.confirmed_at > LEASE_STALE_S


_held: list[HeldLease] = []
_held_lock = threading.Lock()
_guarded: weakref.WeakSet[Engine] = weakref.WeakSet()


def current_lease(wave_id: int) -> HeldLease | None:
    """The lease this process holds on `wave_id`, if any."""
    with _held_lock:
        return next((h for h in _held if h.wave_id == wave_id), None)


def _owner_now(conn, wave_id: int | LeaseTarget) -> str | None:
    """The wave's lease owner, read on the statement's own database connection (inside its
    transaction, if any: no other connection to wait for), with a cursor of its own."""
    style = conn.dialect.paramstyle
    mark = {"qmark": "?", "numeric": ":1", "named": ":w"}.get(style, "%s")
    target = lease_target(wave_id)
    params = {"w": target.key} if style == "named" else (target.key,)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(
            f"SELECT lease_owner FROM {target.table_name} WHERE {target.key_column} = {mark}",
            params,
        )
        row = cursor.fetchone()
    finally:
        cursor.close()
    return row[0] if row else None


def _guard(conn, cursor, statement, parameters, context, executemany) -> None:
    if not _held:
        return
    if context is not None and context.execution_options.get("prakerja_lease"):
        return  # the lease's own statements
    with _held_lock:
        held = [h for h in _held if h.engine is conn.engine]
    for h in held:
        h.check()
        if h.stale():
            owner = _owner_now(conn, h.target or h.wave_id)
            if owner != h.lease.owner:
                h.mark_lost(f"found {owner!r} before a write")
                h.check()
            h.wake.set()  # still ours: renew now


def _install_guard(engine: Engine) -> None:
    with _held_lock:
        if engine in _guarded:
            return
        _guarded.add(engine)
    event.listen(engine, "before_cursor_execute", _guard)


def kill_worker_processes() -> None:
    """Kills this process's batch worker processes (runtime/workers.py): a batch they are
    writing rolls back, and the tasks waiting for them fail."""
    from runtime import workers

    pool = workers._pool
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, AttributeError, TypeError):
            pass


def exit_process(held: HeldLease) -> None:
    """The CLI's answer to a lost lease: end the process at once (exit 1), its worker
    processes already killed; the run that took the wave carries on."""
    logging.shutdown()
    os._exit(1)


def _engine_of(sessions: SessionFactory) -> Engine:
    with sessions() as session:
        return session.get_bind()  # type: ignore[return-value]


@contextmanager
def hold_wave_lease(
    sessions: SessionFactory,
    wave_id: int | LeaseTarget,
    *,
    wait_s: float | None = None,
    on_lost: Callable[[HeldLease], None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[HeldLease]:
    """Holds the wave's lease for the block; see the module's docstring.

    `wait_s=None` (the CLI): a live holder on this host is refused at once (WaveBusyError),
    a holder elsewhere is waited out for at most its lease (LEASE_SECONDS). A number (the
    deployments): any holder is waited for, up to `wait_s`, then WaveBusyError.
    """
    logger = logger or log
    engine = _engine_of(sessions)
    target = lease_target(wave_id)
    if wait_s is None:
        lease = acquire_lease(sessions, wave_id)
    else:
        give_up = time.monotonic() + wait_s
        told = 0.0
        while True:
            try:
                lease = acquire_lease(sessions, wave_id, wait_s=0)
                break
            except WaveBusyError:
                if time.monotonic() >= give_up:
                    raise
                if time.monotonic() - told > 60:
                    told = time.monotonic()
                    logger.info("%s is being run by another live process; waiting", target.label)
                sleep(min(5.0, max(0.1, give_up - time.monotonic())))
    held = HeldLease(
        wave_id if isinstance(wave_id, int) else 0,
        lease,
        sessions,
        engine,
        on_lost,
        logger,
        target=None if isinstance(wave_id, int) else target,
    )
    _install_guard(engine)
    with _held_lock:
        _held.append(held)
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            held.wake.wait(LEASE_RENEW_S)
            held.wake.clear()
            if stop.is_set() or held.lost is not None:
                return
            try:
                renewed = renew_lease(sessions, wave_id, lease)
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease
                logger.warning("could not renew the lease of %s", target.label)
                continue
            if renewed:
                held.confirmed_at = time.monotonic()
            elif not stop.is_set():
                held.mark_lost("found at a renewal")
                return

    beater = threading.Thread(target=beat, daemon=True, name=f"lease-{target.label}")
    beater.start()
    try:
        yield held
    finally:
        stop.set()
        held.wake.set()
        beater.join(timeout=5)
        with _held_lock:
            _held.remove(held)
        if held.lost is None:
            release_lease(sessions, wave_id, lease)


def update_wave_under_lease(held: HeldLease, **values) -> None:
    """Sets wave columns only while the lease is ours (else LeaseLost)."""
    from sqlalchemy import update

    from models.tables import Wave

    w = Wave.__table__  # type: ignore[attr-defined]
    with held.sessions() as session, session.begin():
        got = (
            session.connection()
            .execute(
                update(w)
                .where(w.c.wave_id == held.wave_id, w.c.lease_owner == held.lease.owner)
                .values(**values)
            )
            .rowcount
        )
    if not got:
        held.mark_lost("found when updating the wave")
        held.check()


__all__ = [
    "LEASE_RENEW_S",
    "LEASE_SECONDS",
    "HeldLease",
    "LeaseLost",
    "current_lease",
    "exit_process",
    "hold_wave_lease",
    "update_wave_under_lease",
]
