"""The composition root: everything a process runs, built once from its settings.

`build_app(settings)` makes the program database's engine (models/db.py's one engine
factory, tuned by the settings), the partners configuration, the partner clients and the
limiter they share with the program's other processes (partners/limits.py's interface,
implementation chosen by the run's `Execution`), and holds them in one `App`. A process
builds it once when it starts, from the settings read once (models/config.py):

- the CLI, in its command (cli/): `install(build_app(settings, ...))`;
- a deployment's run, on first use (`current()`);
- a worker process of the pool, from what its parent passes it explicitly (runtime/workers.py);
- a Dask worker, from its own settings on first use, with the run's Execution carried by
  each batch task.

Tasks stay plain functions of (session factory, partner clients, ids): their Prefect
wrappers take what they need from `current()`. Nothing here reads the environment after
the settings were read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.config import Execution, Settings, read_settings
from models.db import SessionFactory, engine_for, init_db, session_factory
from partners.config import PartnersConfig, load_partners_config
from partners.limits import Limiter, SharedLimits, limiter_for
from partners.wiring import Partners, build_partners
from rules.signature import Approvers, ApproversFileError, parse_approvers
from runtime import timing

# ---------------------------------------------------------------- the builders
_approvers_read: dict[str, tuple[tuple[int, int], Approvers]] = {}


def load_approvers(path: str | None) -> Approvers | None:
    """The approvers file (PRAKERJA_APPROVERS), read again when it changes on disk (a
    long-lived `prakerja serve` sees an approver added); None without one: approvals are
    unsigned. ApproversFileError names the file, the entry and the field."""
    if not path:
        return None
    try:
        stat = os.stat(path)
        version = (stat.st_mtime_ns, stat.st_size)
        known = _approvers_read.get(path)
        if known is not None and known[0] == version:
            return known[1]
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ApproversFileError(
            f"{path}: cannot read the approvers file ({exc.strerror or type(exc).__name__})"
        ) from None
    except UnicodeDecodeError:
        raise ApproversFileError(f"{path}: not UTF-8 text") from None
    approvers = parse_approvers(text, path)
    _approvers_read[path] = (version, approvers)
    return approvers


def build_engine(settings: Settings, url: str | None = None) -> Engine:
    """The program database (`url`, else settings.database_url), tuned by the settings;
    the time of its statements counted (runtime/timing.py)."""
    engine = engine_for(settings, url)
    timing.instrument(engine)
    return engine


def load_partners(settings: Settings, env: Mapping[str, str] | None = None) -> PartnersConfig:
    """The partners file of settings.partners (else the built-in simulator file); its
    api_key_env variables are read from `env` (default: the process environment, at
    start-up: they are the file's secrets, not settings)."""
    return load_partners_config(settings.partners, env=env)


def build_limiter(engine: Engine, config: PartnersConfig, partner_limits: str) -> Limiter | None:
    """What every partner request takes first, by the run's partner limits: a token from
    the database's buckets, a Prefect global rate limit slot, or nothing (None)."""
    return limiter_for(partner_limits, engine=engine, config=config)


def build_partner_clients(
    engine: Engine,
    config: PartnersConfig,
    partner_limits: str = "database",
    *,
    sleep: Callable[[float], None] = time.sleep,
    shared: Mapping[str, SharedLimits] | None = None,
) -> tuple[Partners, Limiter | None]:
    """One client per configured partner, each pacing through the shared limiter (and, in
    a worker process, the pool's `shared` limits); the limiter is returned too, to be
    closed with the engine."""
    limiter = build_limiter(engine, config, partner_limits)
    partners = build_partners(
        config, sleep=sleep, limiter=limiter, shared=shared, on_call=timing.partner_call
    )
    return partners, limiter


# ---------------------------------------------------------------- the application object
@dataclass
class App:
    """What a process runs with. Built by `build_app`; its partner clients are made on
    first use (commands that never call a partner never read the partners file)."""

    engine: Engine
    sessions: SessionFactory
    settings: Settings
    execution: Execution
    config: PartnersConfig | None = None
    # In a worker process of the pool: its partners' limits, shared with the other workers.
    shared_limits: Mapping[str, SharedLimits] | None = None
    _partners: Partners | None = field(default=None, repr=False)
    _limiter: Limiter | None = field(default=None, repr=False)
    _siblings: dict[str, App] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def approvers(self) -> Approvers | None:
        """Who may approve, with their keys (PRAKERJA_APPROVERS); None: approvals unsigned."""
        return load_approvers(self.settings.approvers)

    @property
    def partner_limits(self) -> str:
        return self.execution.partner_limits

    @property
    def partners_config(self) -> PartnersConfig:
        """The partners configuration: given to build_app, else the settings' file."""
        with self._lock:
            if self.config is None:
                self.config = load_partners(self.settings)
            return self.config

    @property
    def partners(self) -> Partners:
        config = self.partners_config
        with self._lock:
            if self._partners is None:
                # Every request also takes a token shared with the program's other
                # processes (other waves, deployments): by default in the database.
                self._partners, self._limiter = build_partner_clients(
                    self.engine, config, self.partner_limits, shared=self.shared_limits
                )
            return self._partners

    def for_limits(self, partner_limits: str | None) -> App:
        """This app for a run whose Execution shares partner limits another way (a batch
        task carries its run's): the same engine and settings, its own partner clients,
        built once per mode."""
        if partner_limits is None or partner_limits == self.partner_limits:
            return self
        with self._lock:
            sibling = self._siblings.get(partner_limits)
            if sibling is None:
                sibling = App(
                    self.engine,
                    self.sessions,
                    self.settings,
                    self.execution.model_copy(update={"partner_limits": partner_limits}),
                    self.config,
                    self.shared_limits,
                )
                self._siblings[partner_limits] = sibling
            return sibling

    def close_partners(self) -> None:
        with self._lock:
            siblings, self._siblings = list(self._siblings.values()), {}
            partners, limiter = self._partners, self._limiter
            self._partners = self._limiter = None
        for sibling in siblings:
            sibling.close_partners()
        if partners is not None:
            partners.close()
        close = getattr(limiter, "close", None)
        if close is not None:
            close()

    def dispose(self) -> None:
        """Closes the partner clients, their limiter and the database connections."""
        self.close_partners()
        self.engine.dispose()


# The name the code used before there was an App (tests and benchmarks still use it).
Runtime = App


def build_app(
    settings: Settings,
    *,
    database: str | None = None,
    partners_config: PartnersConfig | None = None,
    execution: Execution | None = None,
    shared_limits: Mapping[str, SharedLimits] | None = None,
) -> App:
    """Everything a process runs with, from its settings: the engine (`database`, else
    settings.database_url) on a database at this code's schema, the partners
    configuration (given, else the settings' file on first use), the run's execution
    (given, else the settings') and, in a pool's worker, the pool's partner limits."""
    engine = build_engine(settings, database)
    init_db(engine)
    return App(
        engine,
        witnessed_sessions(session_factory(engine), settings.audit_witness),
        settings,
        execution or settings.execution(),
        partners_config,
        shared_limits,
    )


# The session.info key naming the audit witness file (PRAKERJA_AUDIT_WITNESS): tasks/audit.py
# appends each audit row there once its transaction has committed.
AUDIT_WITNESS_INFO = "prakerja.audit_witness"


def witnessed_sessions(sessions: SessionFactory, witness_file: str | None) -> SessionFactory:
    """`sessions` whose audit rows are also kept in `witness_file` (None: no file)."""
    if not witness_file:
        return sessions

    def factory() -> Session:
        session = sessions()
        session.info[AUDIT_WITNESS_INFO] = witness_file
        return session

    return factory


# ---------------------------------------------------------------- this process's app
_current: App | None = None
_current_lock = threading.Lock()
# Called before the app is replaced or reset: the worker pool (runtime/workers.py)
# registers its shutdown here, since its processes hold engines of the old app.
_on_replace: list[Callable[[], None]] = []


def on_replace(hook: Callable[[], None]) -> None:
    if hook not in _on_replace:
        _on_replace.append(hook)


def install(app: App) -> App:
    """Makes `app` this process's app (replacing and disposing of the previous one)."""
    global _current
    for hook in _on_replace:
        hook()
    with _current_lock:
        previous, _current = _current, app
    if previous is not None and previous is not app:
        previous.dispose()
    return app


def configure(
    *,
    database: str | None = None,
    partners_config: PartnersConfig | None = None,
    partner_limits: str | None = None,
    settings: Settings | None = None,
    execution: Execution | None = None,
) -> App:
    """Builds and installs this process's app; `settings` default to the environment's,
    read here, once, when the process starts."""
    settings = settings or read_settings()
    if execution is None:
        execution = settings.execution(partner_limits=partner_limits)
    return install(
        build_app(settings, database=database, partners_config=partners_config, execution=execution)
    )


def current(partner_limits: str | None = None) -> App:
    """This process's app; a process that never built one (a deployment's run, a Dask
    worker) builds it now from its settings. `partner_limits`: the run's Execution's."""
    with _current_lock:
        app = _current
    if app is None:
        app = configure()
    return app.for_limits(partner_limits)


get_runtime = current  # the name tasks used before there was an App


def reset() -> None:
    global _current
    for hook in _on_replace:
        hook()
    with _current_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.dispose()
