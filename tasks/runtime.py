"""What every task needs from its process: the database and the partners, built once.

Tasks stay plain functions of (session factory, partners, ids); this module holds what
the composition root (tasks/wiring.py) built for a process (CLI, worker, test) from its
settings (models/config.py), read once when the process configures it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from models.config import Settings, read_settings
from models.db import SessionFactory, init_db, session_factory
from partners.config import PartnersConfig
from partners.wiring import Partners
from tasks import wiring


@dataclass
class Runtime:
    engine: Engine
    sessions: SessionFactory
    partners_config: PartnersConfig | None = None
    # What every partner request also takes a token from (tasks/execution.py): set by the
    # run's Execution, which every partner batch task carries.
    partner_limits: str = "database"
    # The process's settings (models/config.py), read once by configure().
    settings: Settings = field(default_factory=Settings)
    _partners: Partners | None = field(default=None, repr=False)
    _pacer: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def partners(self) -> Partners:
        # Built on first use: commands that never call a partner never read its config.
        with self._lock:
            if self._partners is None:
                if self.partners_config is None:
                    self.partners_config = wiring.load_partners(self.settings)
                # Every request also takes a token shared with the program's other
                # processes (other waves, deployments): by default in the database.
                self._partners, self._pacer = wiring.build_partner_clients(
                    self.engine, self.partners_config, self.partner_limits
                )
            return self._partners

    def use_partner_limits(self, mode: str) -> None:
        """Switches the shared partner limits (a new run with another Execution)."""
        with self._lock:
            if mode == self.partner_limits:
                return
            self._close_pacer()
            self.partner_limits, self._partners = mode, None

    def _close_pacer(self) -> None:
        close = getattr(self._pacer, "close", None)
        if close is not None:
            close()
        self._pacer = None

    def dispose(self) -> None:
        """Closes the database connections this runtime holds (the buckets' too)."""
        self._close_pacer()
        self.engine.dispose()


_current: Runtime | None = None
_current_lock = threading.Lock()
# Called before the runtime is replaced or reset: the worker pool (tasks/workers.py)
# registers its shutdown here, since its processes hold engines of the old runtime.
_on_replace: list[Callable[[], None]] = []


def on_replace(hook: Callable[[], None]) -> None:
    if hook not in _on_replace:
        _on_replace.append(hook)


def configure(
    *,
    database: str | None = None,
    partners_config: PartnersConfig | None = None,
    partner_limits: str = "database",
    settings: Settings | None = None,
) -> Runtime:
    """Sets this process's runtime (the CLI calls it before running a flow); `settings`
    default to the environment's, read here once."""
    global _current
    for hook in _on_replace:
        hook()
    settings = settings or read_settings()
    engine = wiring.build_engine(settings, database)
    init_db(engine)
    with _current_lock:
        if _current is not None:
            _current.dispose()
        _current = Runtime(
            engine, session_factory(engine), partners_config, partner_limits, settings
        )
    return _current


def get_runtime(partner_limits: str | None = None) -> Runtime:
    """This process's runtime; a process that was never configured (a Dask worker) builds
    it from its environment. `partner_limits` comes from the run's Execution."""
    with _current_lock:
        current = _current
    if current is None:
        current = configure(partner_limits=partner_limits or "database")
    elif partner_limits is not None:
        current.use_partner_limits(partner_limits)
    return current


def reset() -> None:
    global _current
    for hook in _on_replace:
        hook()
    with _current_lock:
        if _current is not None:
            _current.dispose()
        _current = None
