"""What every task needs from its process: the database and the partners, built once.

Tasks stay plain functions of (session factory, partners, ids); this module is where a
process (CLI, worker, test) decides which database and partners they get.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from models.db import SessionFactory, database_url, init_db, make_engine, session_factory
from partners.config import PartnersConfig, load_partners_config
from partners.wiring import Partners, build_partners
from tasks import shared_limits


@dataclass
class Runtime:
    engine: Engine
    sessions: SessionFactory
    partners_config: PartnersConfig | None = None
    _partners: Partners | None = field(default=None, repr=False)
    _pacer: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def partners(self) -> Partners:
        # Built on first use: commands that never call a partner never read its config.
        with self._lock:
            if self._partners is None:
                if self.partners_config is None:
                    self.partners_config = load_partners_config()
                # Every request also takes a token shared with the program's other
                # processes (other waves, deployments): by default in the database.
                self._pacer = shared_limits.partner_pacer(self.engine, self.partners_config)
                self._partners = build_partners(self.partners_config, shared_pacer=self._pacer)
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
    *, database: str | None = None, partners_config: PartnersConfig | None = None
) -> Runtime:
    """Sets this process's runtime (the CLI calls it before running a flow)."""
    global _current
    _stop_workers()
    engine = make_engine(database or database_url())
    init_db(engine)
    with _current_lock:
        if _current is not None:
            _current.dispose()
        _current = Runtime(engine, session_factory(engine), partners_config)
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
