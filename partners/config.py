"""The partners file (interfaces.md, "Configuration"): where each partner is and how to call it."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PARTNERS_ENV = "PRAKERJA_PARTNERS"
BUILTIN_PATH = Path(__file__).with_name("default_partners.toml")
SIMULATOR_ROOT = "http://127.0.0.1:8700"
# Sent when a section names no key variable: only the built-in simulator file may do that
# (any other file must name an api_key_env in every section).
SIMULATOR_API_KEY = "simulator"

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_CATEGORY = re.compile(r"^[A-Z_]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """The partners file is refused; the message names the file and the field."""


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 6
    total_s: float = 60.0
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0


@dataclass(frozen=True)
class PartnerSettings:
    id: str
    base_url: str
    api_key: str = field(repr=False)
    batch_size: int = 1000
    max_rps: float = 50.0
    max_concurrency: int = 8
    timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    retry: RetrySettings = RetrySettings()
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0


@dataclass(frozen=True)
class AgencySettings(PartnerSettings):
    # Keyword-only so that these required fields may follow the defaulted ones above.
    category: str = field(kw_only=True)
    effect: str = field(kw_only=True)


@dataclass(frozen=True)
class PartnersConfig:
    registry: PartnerSettings
    agencies: tuple[AgencySettings, ...]
    payment_providers: dict[str, PartnerSettings]
    card_issuer: PartnerSettings
    notifier: PartnerSettings
    source: str
    # The training platforms' event feeds, in the file's order; a file may name none.
    training_platforms: tuple[PartnerSettings, ...] = ()

    def every(self) -> list[PartnerSettings]:
        """Every partner of the file, each once."""
        return [
            self.registry,
            *self.agencies,
            *self.payment_providers.values(),
            self.card_issuer,
            self.notifier,
            *self.training_platforms,
        ]


def load_partners_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> PartnersConfig:
    """Reads and checks a partners file: `path` (the process's settings.partners, read once
    at start-up), else PRAKERJA_PARTNERS of a given `env`, else the built-in one.

    Key variables (the file's api_key_env) are read from `env` (default: the process
    environment): which ones is the file's to say, so they are not settings of their own.
    """
    if path is None and env is not None:
        from models.config import read_settings

        path = read_settings(env).partners
    env = os.environ if env is None else env
    path = path or BUILTIN_PATH
    source = str(Path(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"partners file {source}: cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"partners file {source}: malformed TOML: {exc}") from None
    builtin = Path(path).resolve() == BUILTIN_PATH.resolve()
    return _Parser(source, env, builtin=builtin).config(data)


def simulator_config(root_url: str) -> PartnersConfig:
    """The built-in file with the simulator's root moved to `root_url` (e.g. a free port)."""
    root = root_url.rstrip("/")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"simulator root {root_url!r}: must be an http(s) URL")
    config = load_partners_config(BUILTIN_PATH, env={})

    def moved(settings: Any) -> Any:
        if not settings.base_url.startswith(SIMULATOR_ROOT):
            raise ConfigError(
                f"partners file {config.source}: [{settings.id}].base_url: "
                f"not under {SIMULATOR_ROOT}"
            )
        return replace(settings, base_url=root + settings.base_url[len(SIMULATOR_ROOT) :])

    return PartnersConfig(
        registry=moved(config.registry),
        agencies=tuple(moved(a) for a in config.agencies),
        payment_providers={k: moved(p) for k, p in config.payment_providers.items()},
        card_issuer=moved(config.card_issuer),
        notifier=moved(config.notifier),
        source=f"{config.source} (simulator at {root})",
        training_platforms=tuple(moved(t) for t in config.training_platforms),
    )


SIMULATOR_KEY_ENV = "PRAKERJA_SIMULATOR_API_KEY"
_SECTION_HEADER = re.compile(r"(?m)^(\[\[?[a-z_]+\]\]?)[ \t]*$")


def simulator_partners_text(root_url: str, api_key_env: str = SIMULATOR_KEY_ENV) -> str:
    """The built-in file's text moved to `root_url`, with `api_key_env = ...` in every
    section: a file for $PRAKERJA_PARTNERS that calls a simulator (tests, benchmarks). The
    variable must hold a key (any non-empty one for the simulator)."""
    text = BUILTIN_PATH.read_text(encoding="utf-8").replace(SIMULATOR_ROOT, root_url.rstrip("/"))
    return _SECTION_HEADER.sub(lambda m: f'{m.group(1)}\napi_key_env = "{api_key_env}"', text)


# ---------------------------------------------------------------- the file's shape
# What a section may say, checked by pydantic (unknown fields and sections refused, strict
# types: `true` is not a batch size). Defaults are the runtime settings' own (above).
_R, _P = RetrySettings, PartnerSettings
PositiveInt = Annotated[int, Field(gt=0)]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeNumber = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    base_url: Annotated[str, Field(min_length=1)]
    api_key_env: Annotated[str, Field(pattern=_ENV_NAME.pattern)] | None = None
    allow_insecure_http: bool = False
    batch_size: PositiveInt = _P.batch_size
    max_rps: PositiveNumber = _P.max_rps
    max_concurrency: PositiveInt = _P.max_concurrency
    timeout_s: PositiveNumber = _P.timeout_s
    connect_timeout_s: PositiveNumber = _P.connect_timeout_s
    retry_attempts: PositiveInt = _R.attempts
    retry_total_s: PositiveNumber = _R.total_s
    retry_backoff_s: NonNegativeNumber = _R.backoff_s
    retry_backoff_max_s: NonNegativeNumber = _R.backoff_max_s
    breaker_threshold: PositiveInt = _P.breaker_threshold
    breaker_cooldown_s: NonNegativeNumber = _P.breaker_cooldown_s

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("must have no query or fragment")
        return url


class _ProviderSection(_Section):
    id: Annotated[str, Field(pattern=_ID.pattern)]


class _AgencySection(_ProviderSection):
    category: Annotated[str, Field(pattern=_CATEGORY.pattern)]
    effect: Literal["exclude", "prioritize"]


class _PartnersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    registry: _Section
    agencies: Annotated[list[_AgencySection], Field(min_length=1)]
    payment_providers: Annotated[list[_ProviderSection], Field(min_length=1)]
    card_issuer: _Section
    notifier: _Section
    # Optional: a file without the section has no training platforms.
    training_platforms: list[_ProviderSection] = Field(default_factory=list)


# The sections that are arrays of tables, each entry with its own id.
_MANY = ("agencies", "payment_providers", "training_platforms")

# A refusal's wording per field, whatever pydantic's check was (type or bound).
_FIELD_MESSAGES = {
    **{
        name: "must be a positive integer"
        for name in ("batch_size", "max_concurrency", "retry_attempts", "breaker_threshold")
    },
    **{name: "must be a positive number" for name in ("max_rps", "timeout_s", "connect_timeout_s")},
    **{
        name: "must be a non-negative number"
        for name in (
            "retry_total_s",
            "retry_backoff_s",
            "retry_backoff_max_s",
            "breaker_cooldown_s",
        )
    },
    "retry_total_s": "must be a positive number",
    "allow_insecure_http": "must be true or false",
    "api_key_env": "must be an environment variable name",
    "id": "must be lowercase letters, digits, '.', '_' or '-'",
    "category": "must match [A-Z_]+",
    "effect": "must be 'exclude' or 'prioritize'",
}


class _Parser:
    def __init__(self, source: str, env: Mapping[str, str], *, builtin: bool = False) -> None:
        self.source = source
        self.env = env
        self.builtin = builtin

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"partners file {self.source}: {where}: {message}")

    def config(self, data: dict[str, Any]) -> PartnersConfig:
        try:
            shape = _PartnersFile.model_validate(data)
        except ValidationError as exc:
            # An unknown name is the likelier cause of a "missing" one (a typo): said first.
            errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
            raise self.refusal(data, errors[0]) from None
        self.unique_ids(shape.agencies, "agencies")
        self.unique_ids(shape.payment_providers, "payment_providers")
        self.unique_ids(shape.training_platforms, "training_platforms")
        self.platform_ids_unused(shape)
        agencies = tuple(
            AgencySettings(
                id=a.id, category=a.category, effect=a.effect, **self.common(a, self.entry(i, a))
            )
            for i, a in enumerate(shape.agencies)
        )
        providers = {
            p.id: PartnerSettings(id=p.id, **self.common(p, self.entry(i, p, "payment_providers")))
            for i, p in enumerate(shape.payment_providers)
        }
        return PartnersConfig(
            registry=PartnerSettings(id="registry", **self.common(shape.registry, "[registry]")),
            agencies=agencies,
            payment_providers=providers,
            card_issuer=PartnerSettings(
                id="card-issuer", **self.common(shape.card_issuer, "[card_issuer]")
            ),
            notifier=PartnerSettings(id="notifier", **self.common(shape.notifier, "[notifier]")),
            source=self.source,
            training_platforms=tuple(
                PartnerSettings(id=t.id, **self.common(t, self.entry(i, t, "training_platforms")))
                for i, t in enumerate(shape.training_platforms)
            ),
        )

    def refusal(self, data: dict[str, Any], error: Any) -> ConfigError:
        """pydantic's first error as "<section>[ #n (id)].<field>: <message>"."""
        loc = list(error["loc"])
        section = str(loc.pop(0))
        if section not in _PartnersFile.model_fields:
            return self.fail(f"[{section}]", "unknown section")
        many = section in _MANY
        where = f"[[{section}]]" if many else f"[{section}]"
        if many and loc and isinstance(loc[0], int):
            number = loc.pop(0)
            entry = data[section][number]
            entry_id = entry.get("id") if isinstance(entry, dict) else None
            label = f" ({entry_id})" if isinstance(entry_id, str) and entry_id else ""
            where = f"[[{section}]] #{number + 1}{label}"
        kind = error["type"]
        if not loc:  # the section itself
            if kind == "missing":
                return self.fail(where, "required")
            if kind == "too_short":
                return self.fail(where, "at least one is required")
            shape = "an array of tables" if many else "a table"
            return self.fail(where, f"must be {shape}")
        field = str(loc[0])
        where = f"{where}.{field}"
        if kind == "extra_forbidden":
            return self.fail(where, "unknown field")
        if kind == "missing":
            return self.fail(where, "required")
        if kind == "value_error":
            return self.fail(where, str(error["msg"]).removeprefix("Value error, "))
        return self.fail(where, _FIELD_MESSAGES.get(field, str(error["msg"])))

    def entry(self, index: int, section: _ProviderSection, name: str = "agencies") -> str:
        return f"[[{name}]] #{index + 1} ({section.id})"

    def unique_ids(self, entries: list, name: str) -> None:
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            if entry.id in seen:
                raise self.fail(f"{self.entry(index, entry, name)}.id", "duplicate id")
            seen.add(entry.id)

    def platform_ids_unused(self, shape: _PartnersFile) -> None:
        """A platform's id is no other partner's: limits, breakers and the simulator's
        faults are kept per partner id, so two partners with one id would share them."""
        taken = {"registry", "card-issuer", "notifier"}
        taken |= {a.id for a in shape.agencies} | {p.id for p in shape.payment_providers}
        for index, platform in enumerate(shape.training_platforms):
            if platform.id in taken:
                where = f"{self.entry(index, platform, 'training_platforms')}.id"
                raise self.fail(where, "duplicate id: another partner of the file has it")

    def common(self, section: _Section, where: str) -> dict[str, Any]:
        """What the file's fields mean at run time: the key read from its variable, the
        URL checked for clear text, the retry fields as one RetrySettings."""
        if section.retry_backoff_max_s < section.retry_backoff_s:
            raise self.fail(f"{where}.retry_backoff_max_s", "must be at least retry_backoff_s")
        return {
            "base_url": self.base_url(section, where),
            "api_key": self.api_key(section, where),
            "batch_size": section.batch_size,
            "max_rps": section.max_rps,
            "max_concurrency": section.max_concurrency,
            "timeout_s": section.timeout_s,
            "connect_timeout_s": section.connect_timeout_s,
            "retry": RetrySettings(
                attempts=section.retry_attempts,
                total_s=section.retry_total_s,
                backoff_s=section.retry_backoff_s,
                backoff_max_s=section.retry_backoff_max_s,
            ),
            "breaker_threshold": section.breaker_threshold,
            "breaker_cooldown_s": section.breaker_cooldown_s,
        }

    def base_url(self, section: _Section, where: str) -> str:
        parts = urlsplit(section.base_url)
        if parts.scheme == "http" and not section.allow_insecure_http:
            if not _is_loopback(parts.hostname):
                # Personal data and keys never travel in clear text by accident (interfaces.md).
                raise self.fail(
                    f"{where}.base_url",
                    f"http:// to a host that is not loopback ({parts.hostname}): use https://, "
                    f"or set allow_insecure_http = true in {where}",
                )
        # Paths of partner-api.md start with "/", so a trailing one would double it.
        return section.base_url.rstrip("/")

    def api_key(self, section: _Section, where: str) -> str:
        name = section.api_key_env
        if name is None:
            if self.builtin:
                return SIMULATOR_API_KEY
            raise self.fail(
                f"{where}.api_key_env",
                "required: name the environment variable that holds this partner's API key",
            )
        key = self.env.get(name)
        if not key:
            raise self.fail(f"{where}.api_key_env", f"environment variable {name} is not set")
        return key


def _is_loopback(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (as written in the URL: no name is resolved)."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
