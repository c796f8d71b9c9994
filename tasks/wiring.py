"""The composition root: what runs, built from the settings (models/config.py) in one place.

`build_engine` makes the program database's engine, `load_partners` reads the partners
file the settings name, `build_limiter` picks the backend that shares partner rate limits
between processes (the run's Execution says which), and `build_partner_clients` makes one
client per partner wired to it. tasks/runtime.py holds what these build for its process;
the CLI, the operation flows and worker processes reach them through it. The run's task
runner and worker count travel in its Execution (tasks/execution.py, built from the same
settings by `Execution.from_settings`) and are chosen in flows/runners.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sqlalchemy.engine import Engine

from models.config import Settings
from models.db import make_engine
from partners.config import PartnersConfig, load_partners_config
from partners.wiring import Partners, build_partners
from tasks import shared_limits

Pacer = Callable[[str], None]


def build_engine(settings: Settings, url: str | None = None) -> Engine:
    """The program database (`url`, else settings.database_url), tuned by the settings."""
    return make_engine(
        url or settings.database_url,
        sqlite_cache_mb=settings.sqlite_cache_mb,
        sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
    )


def load_partners(settings: Settings, env: Mapping[str, str] | None = None) -> PartnersConfig:
    """The partners file of settings.partners (else the built-in simulator file); its
    api_key_env variables are read from `env` (default: the process environment)."""
    return load_partners_config(settings.partners, env=env)


def build_limiter(engine: Engine, config: PartnersConfig, partner_limits: str) -> Pacer | None:
    """What every partner request takes first, by the run's partner limits
    (tasks/execution.py, from PRAKERJA_PARTNER_LIMITS or the CLI's flags): a token from the
    database's buckets, a Prefect global rate limit slot, or nothing (None)."""
    return shared_limits.partner_pacer(engine, config, partner_limits)


def build_partner_clients(
    engine: Engine,
    config: PartnersConfig,
    partner_limits: str = "database",
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Partners, Pacer | None]:
    """One client per configured partner, each pacing through the shared limiter; the
    limiter is returned too, to be closed with the engine."""
    pacer = build_limiter(engine, config, partner_limits)
    return build_partners(config, sleep=sleep, shared_pacer=pacer), pacer
