"""What every task needs from its process: the database and the partners, built once.

Tasks stay plain functions of (session factory, partners, ids); this module holds what
the composition root (tasks/wiring.py) built for a process (CLI, worker, test) from its
settings (models/config.py), read once when the process configures it.
"""

from __future__ import annotations

import threading
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
                    self.settings, self.engine, self.partners_config
                )
            return self._partners

    def dispose(self) -> None:
        """Closes the database connections this runtime holds (the buckets' too)."""
        close = getattr(self._pacer, "close", None)
        if close is not None:
            close()
        self.engine.dispose()


_current: Runtime | None = None
_current_lock = threading.Lock()


def configure(
    *,
    database: str | None = None,
    partners_config: PartnersConfig | None = None,
    settings: Settings | None = None,
) -> Runtime:
    """Sets this process's runtime (the CLI calls it before running a flow); `settings`
    default to the environment's, read here once."""
    global _current
    _stop_workers()
    settings = settings or read_settings()
    engine = wiring.build_engine(settings, database)
    init_db(engine)
    with _current_lock:
        if _current is not None:
            _current.dispose()
        _current = Runtime(engine, session_factory(engine), partners_config, settings)
    return _current


def get_runtime() -> Runtime:
    """This process's runtime; a worker that was never configured builds it from the env."""
    with _current_lock:
        current = _current
    return current if current is not None else configure()


def reset() -> None:
    global _current
    _stop_workers()
    with _current_lock:
        if _current is not None:
            _current.dispose()
        _current = None


def _stop_workers() -> None:
    # Worker processes hold engines of the runtime being replaced.
    from tasks import workers

    workers.shutdown()
