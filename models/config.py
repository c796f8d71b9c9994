"""The program's environment: every PRAKERJA_* variable, its type, default and meaning.

Read once, when a process starts (the CLI, a deployment's run, the portal, a worker):
`read_settings()`. Nothing reads these variables anywhere else, and nothing at import time;
the values are handed to what needs them (runtime/wiring.py builds the engine, the partner
clients and the limiter backend from them). A child process gets the same settings with
`Settings.model_validate(settings.handover())`, or through `handover_env()` in its
environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "PRAKERJA_"
DEFAULT_DATABASE_URL = "sqlite:///./var/prakerja.db"
PARTNER_LIMITS = ("database", "prefect", "process")
MAX_DEFAULT_WORKERS = 6

TaskRunnerName = Literal["threads", "dask"]
PartnerLimits = Literal["database", "prefect", "process"]


class ExecutionFields(BaseModel):
    """How a run executes its batches: declared once, here. They are settings
    (PRAKERJA_TASK_RUNNER, ...) and the fields of the `Execution` that travels with a run."""

    task_runner: TaskRunnerName = Field(
        "threads", description="Where batch tasks run (as `wave run --task-runner`)."
    )
    dask_address: str | None = Field(
        None, description="The Dask scheduler with task_runner dask, e.g. tcp://host:8786."
    )
    worker_processes: int | None = Field(
        None, ge=0, description="Worker processes for batches (unset: three per core, at most 6)."
    )
    partner_limits: PartnerLimits = Field(
        "database",
        description="Where partner rate limits are shared: database (every process of this "
        "database), prefect (Prefect global rate limits) or process (none beyond it).",
    )

    @field_validator("partner_limits", mode="before")
    @classmethod
    def _known_limits(cls, value: object) -> object:
        chosen = str(value).strip().lower()
        if chosen not in PARTNER_LIMITS:
            raise ValueError(
                f"{PREFIX}PARTNER_LIMITS must be one of {', '.join(PARTNER_LIMITS)}, not {value!r}"
            )
        return chosen


class Execution(ExecutionFields):
    """Where a run's batches run and how its partner calls share limits: the process's
    settings (`Settings.execution()`), with the run's own choices (the CLI's flags) over
    them. The wave flow takes it as a parameter and every batch task carries it, so that a
    Dask worker started elsewhere does what the run asked, whatever its own environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _dask_needs_address(self) -> Execution:
        if self.task_runner == "dask" and not self.dask_address:
            raise ValueError("dask_address: required with task_runner 'dask'")
        return self

    def workers(self) -> int:
        """Worker processes a stage's batches get; 0 means the calling process does them.

        On Dask the Dask workers are the processes; with Prefect's global rate limits the
        limits are held by the server, not by a pool's shared memory.
        """
        if self.task_runner == "dask" or self.partner_limits == "prefect":
            return 0
        count = self.worker_processes
        if count is None:
            # Three per core: a worker runs one batch at a time and spends much of it
            # waiting for partners (screening asks each agency in turn), so the others keep
            # the core busy meanwhile. On 2 cores, 6 screened a million 10% faster than 4.
            count = min(3 * (os.cpu_count() or 1), MAX_DEFAULT_WORKERS)
        return 0 if count <= 1 else count

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Execution:
        return settings.execution(**overrides)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Execution:
        """The execution of an environment's settings (a test's or a deployment's `env`)."""
        return read_settings(env).execution(**overrides)


class Settings(BaseSettings, ExecutionFields):
    """One field per variable: `database_url` is PRAKERJA_DATABASE_URL. An empty variable
    counts as unset. The execution fields (task_runner, dask_address, worker_processes,
    partner_limits) are declared once, in ExecutionFields."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )

    # The program database
    database_url: str = Field(
        DEFAULT_DATABASE_URL, description="The program database (SQLite file or PostgreSQL URL)."
    )
    sqlite_cache_mb: int = Field(
        32, ge=1, le=65_536, description="Page cache per SQLite connection, in MB."
    )
    sqlite_busy_timeout_s: float = Field(
        60.0, gt=0, description="How long a SQLite write waits for another's lock, in seconds."
    )
    # Partners
    partners: str | None = Field(
        None, description="The partners file (TOML); unset: the built-in simulator file."
    )
    shared_rate_limits: bool = Field(
        False, description="1: Prefect global rate limits (as `wave run --shared-rate-limits`)."
    )
    # Running waves
    batch_size: int = Field(
        10_000, ge=1, le=1_000_000, description="Registrants per batch task of a partner stage."
    )
    host_id: str | None = Field(
        None, description="This machine's identity in wave leases (unset: derived from the host)."
    )
    lease_wait_s: float = Field(
        600.0, ge=0, description="How long a deployment run waits for a wave another run holds."
    )
    sign_off_wait_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="How long a deployment run paused for sign-off waits for the form "
        "(the approvals can still be given with `prakerja wave sign-off` after).",
    )
    approvers: str | None = Field(
        None,
        description="The approvers file (TOML, `[[approver]]` name and ssh-ed25519 "
        "public_key): approvals count only signed by their approver's key; unset: unsigned.",
    )
    # Operations
    drop_dir: str = Field("var/drop", description="The drop folder of the weekly wave.")
    audit_witness: str | None = Field(
        None,
        description="A file outside the database that keeps each audit row's id and hash "
        "(appended, fsync'd; `prakerja audit --verify` checks the trail against it).",
    )
    alert_webhook_url: SecretStr | None = Field(
        None, description="Webhook receiving the alerts' JSON {subject, body} (`prakerja alerts`)."
    )
    silent_run_after_s: float = Field(
        600.0, gt=0, description="A run silent (no heartbeat) this long is marked Crashed."
    )
    simulator_admin_token: SecretStr | None = Field(
        None, description="Bearer token of the simulator's /_admin off loopback."
    )
    setup_seconds: int | None = Field(
        None, ge=0, description="Set by `./prakerja`: how long its setup of .venv took (demo)."
    )
    # The registrant dashboard
    portal_secret: SecretStr | None = Field(
        None, description="Keys the portal's hashes of NIKs and codes; at least 32 characters."
    )
    portal_secure_cookie: bool = Field(
        True,
        description="Mark the session cookie Secure on plain-HTTP requests too (`prakerja "
        "portal` turns it off on loopback without --proxy-headers, and with "
        "--insecure-cookie); a request that came over https always gets it.",
    )
    portal_code_window_ms: int = Field(
        50, ge=1, le=1000, description="How long sign-in codes are collected into one call."
    )
    portal_guess_alert: int = Field(
        300,
        ge=1,
        description="Wrong sign-in codes a minute, across all NIKs, above which the event "
        "prakerja.portal.guessing is raised (at most once per 10 minutes).",
    )

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() show the database URL without its password (SecretStr fields
        # already show stars): settings end up in logs and tracebacks.
        for name, value in super().__repr_args__():
            yield name, mask_url_password(value) if name == "database_url" else value

    def execution(self, **overrides: Any) -> Execution:
        """The run's Execution: these settings (PRAKERJA_SHARED_RATE_LIMITS=1 meaning
        partner_limits prefect), with `overrides` (the CLI's flags; None: not given) over
        them."""
        values: dict[str, Any] = {
            name: getattr(self, name) for name in ExecutionFields.model_fields
        }
        if self.shared_rate_limits:
            values["partner_limits"] = "prefect"
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Execution.model_validate(values)

    @classmethod
    def env_name(cls, field: str) -> str:
        return PREFIX + field.upper()

    def handover(self) -> dict:
        """Plain values (secrets revealed) that rebuild these settings in another process:
        `Settings.model_validate(settings.handover())`."""
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in self
        }

    def handover_env(self) -> dict[str, str]:
        """These settings as PRAKERJA_* variables, for a child process's environment."""
        out = {}
        for name, value in self.handover().items():
            if value is not None:
                out[self.env_name(name)] = str(int(value) if isinstance(value, bool) else value)
        return out


def mask_url_password(url: str) -> str:
    """`postgresql+psycopg://user:***@host/db` for a URL with a password; others as given."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparsable database URL>" if "@" in url else url
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


class SettingsEnvError(ValueError):
    """A PRAKERJA_* variable holds a value its setting refuses; the message names it."""


def read_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process's environment (or of `env`, e.g. a test's); a refused
    value raises SettingsEnvError naming its variable (never showing a secret's value)."""
    try:
        return _read(env)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = Settings.env_name(str(error["loc"][0])) if error["loc"] else PREFIX + "*"
        msg = str(error["msg"]).removeprefix("Value error, ").replace("Input should", "must")
        raise SettingsEnvError(f"{name}: {msg}") from None


def _read(env: Mapping[str, str] | None) -> Settings:
    if env is None:
        return Settings()
    given: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = env.get(Settings.env_name(name))
        if value:
            given[name] = value
    # Explicit values win over the process environment; unset ones take their default.
    defaults = {
        name: info.default for name, info in Settings.model_fields.items() if name not in given
    }
    return Settings(**defaults, **given)
