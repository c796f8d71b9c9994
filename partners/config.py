"""The partners file (interfaces.md, "Configuration"): where each partner is and how to call it."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PARTNERS_ENV = "PRAKERJA_PARTNERS"
BUILTIN_PATH = Path(__file__).with_name("default_partners.toml")
SIMULATOR_ROOT = "http://127.0.0.1:8700"
# Sent when a section names no key variable: only the built-in simulator file may do that
# (any other file must name an api_key_env in every section).
SIMULATOR_API_KEY = "simulator"
EFFECTS = ("exclude", "prioritize")

_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
_CATEGORY = re.compile(r"[A-Z_]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def load_partners_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> PartnersConfig:
    """Reads and checks a partners file: `path`, else $PRAKERJA_PARTNERS, else the built-in one.

    Key variables (the file's api_key_env) are read from `env` (default: the process
    environment): which ones is the file's to say, so they are not settings of their own.
    """
    env = os.environ if env is None else env
    if path is None:
        from models.config import read_settings

        path = read_settings(env).partners or BUILTIN_PATH
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
    )


SIMULATOR_KEY_ENV = "PRAKERJA_SIMULATOR_API_KEY"
_SECTION_HEADER = re.compile(r"(?m)^(\[\[?[a-z_]+\]\]?)[ \t]*$")


def simulator_partners_text(root_url: str, api_key_env: str = SIMULATOR_KEY_ENV) -> str:
    """The built-in file's text moved to `root_url`, with `api_key_env = ...` in every
    section: a file for $PRAKERJA_PARTNERS that calls a simulator (tests, benchmarks). The
    variable must hold a key (any non-empty one for the simulator)."""
    text = BUILTIN_PATH.read_text(encoding="utf-8").replace(SIMULATOR_ROOT, root_url.rstrip("/"))
    return _SECTION_HEADER.sub(lambda m: f'{m.group(1)}\napi_key_env = "{api_key_env}"', text)


_COMMON_FIELDS = frozenset(
    {
        "base_url",
        "api_key_env",
        "allow_insecure_http",
        "batch_size",
        "max_rps",
        "max_concurrency",
        "timeout_s",
        "connect_timeout_s",
        "retry_attempts",
        "retry_total_s",
        "retry_backoff_s",
        "retry_backoff_max_s",
        "breaker_threshold",
        "breaker_cooldown_s",
    }
)
_AGENCY_FIELDS = _COMMON_FIELDS | {"id", "category", "effect"}
_PROVIDER_FIELDS = _COMMON_FIELDS | {"id"}
_SECTIONS = ("registry", "agencies", "payment_providers", "card_issuer", "notifier")


class _Parser:
    def __init__(self, source: str, env: Mapping[str, str], *, builtin: bool = False) -> None:
        self.source = source
        self.env = env
        self.builtin = builtin

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"partners file {self.source}: {where}: {message}")

    def config(self, data: dict[str, Any]) -> PartnersConfig:
        for name in data:
            if name not in _SECTIONS:
                raise self.fail(f"[{name}]", "unknown section")
        agencies = tuple(self.agency(i, t) for i, t in enumerate(self.tables(data, "agencies"), 1))
        providers = [
            self.provider(i, t) for i, t in enumerate(self.tables(data, "payment_providers"), 1)
        ]
        self.unique(agencies, "agencies")
        self.unique(providers, "payment_providers")
        return PartnersConfig(
            registry=self.single(data, "registry", "registry"),
            agencies=agencies,
            payment_providers={p.id: p for p in providers},
            card_issuer=self.single(data, "card_issuer", "card-issuer"),
            notifier=self.single(data, "notifier", "notifier"),
            source=self.source,
        )

    def single(self, data: dict[str, Any], name: str, partner_id: str) -> PartnerSettings:
        table = data.get(name)
        where = f"[{name}]"
        if table is None:
            raise self.fail(where, "required")
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self.known(table, _COMMON_FIELDS, where)
        return PartnerSettings(id=partner_id, **self.common(table, where))

    def tables(self, data: dict[str, Any], name: str) -> list[dict[str, Any]]:
        tables = data.get(name)
        where = f"[[{name}]]"
        if tables is None:
            raise self.fail(where, "required")
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise self.fail(where, "must be an array of tables")
        if not tables:
            raise self.fail(where, "at least one is required")
        return tables

    def agency(self, number: int, table: dict[str, Any]) -> AgencySettings:
        where = self.entry_where("agencies", number, table)
        self.known(table, _AGENCY_FIELDS, where)
        category = self.required(table, "category", where, str)
        if not _CATEGORY.fullmatch(category):
            raise self.fail(f"{where}.category", "must match [A-Z_]+")
        effect = self.required(table, "effect", where, str)
        if effect not in EFFECTS:
            raise self.fail(f"{where}.effect", "must be 'exclude' or 'prioritize'")
        return AgencySettings(
            id=self.entry_id(table, where),
            category=category,
            effect=effect,
            **self.common(table, where),
        )

    def provider(self, number: int, table: dict[str, Any]) -> PartnerSettings:
        where = self.entry_where("payment_providers", number, table)
        self.known(table, _PROVIDER_FIELDS, where)
        return PartnerSettings(id=self.entry_id(table, where), **self.common(table, where))

    def entry_where(self, name: str, number: int, table: dict[str, Any]) -> str:
        entry_id = table.get("id")
        label = f" ({entry_id})" if isinstance(entry_id, str) and entry_id else ""
        return f"[[{name}]] #{number}{label}"

    def entry_id(self, table: dict[str, Any], where: str) -> str:
        entry_id = self.required(table, "id", where, str)
        if not _ID.fullmatch(entry_id):
            raise self.fail(f"{where}.id", "must be lowercase letters, digits, '.', '_' or '-'")
        return entry_id

    def unique(self, entries: Any, name: str) -> None:
        seen: set[str] = set()
        for number, entry in enumerate(entries, 1):
            if entry.id in seen:
                raise self.fail(f"[[{name}]] #{number} ({entry.id}).id", "duplicate id")
            seen.add(entry.id)

    def known(self, table: dict[str, Any], allowed: frozenset[str], where: str) -> None:
        for name in table:
            if name not in allowed:
                raise self.fail(f"{where}.{name}", "unknown field")

    def required(self, table: dict[str, Any], name: str, where: str, kind: type) -> Any:
        if name not in table:
            raise self.fail(f"{where}.{name}", "required")
        value = table[name]
        if not isinstance(value, kind) or (kind is str and not value):
            raise self.fail(f"{where}.{name}", f"must be a non-empty {kind.__name__}")
        return value

    def common(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        def get(name: str, check: Callable[[Any, str], Any], default: Any) -> Any:
            if name not in table:
                return default
            return check(table[name], f"{where}.{name}")

        defaults = RetrySettings()
        retry = RetrySettings(
            attempts=get("retry_attempts", self.positive_int, defaults.attempts),
            total_s=get("retry_total_s", self.positive_number, defaults.total_s),
            backoff_s=get("retry_backoff_s", self.non_negative_number, defaults.backoff_s),
            backoff_max_s=get(
                "retry_backoff_max_s", self.non_negative_number, defaults.backoff_max_s
            ),
        )
        if retry.backoff_max_s < retry.backoff_s:
            raise self.fail(f"{where}.retry_backoff_max_s", "must be at least retry_backoff_s")
        return {
            "base_url": self.base_url(table, where),
            "api_key": self.api_key(table, where),
            "batch_size": get("batch_size", self.positive_int, 1000),
            "max_rps": get("max_rps", self.positive_number, 50.0),
            "max_concurrency": get("max_concurrency", self.positive_int, 8),
            "timeout_s": get("timeout_s", self.positive_number, 10.0),
            "connect_timeout_s": get("connect_timeout_s", self.positive_number, 3.0),
            "retry": retry,
            "breaker_threshold": get("breaker_threshold", self.positive_int, 5),
            "breaker_cooldown_s": get("breaker_cooldown_s", self.non_negative_number, 30.0),
        }

    def base_url(self, table: dict[str, Any], where: str) -> str:
        url = self.required(table, "base_url", where, str)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(f"{where}.base_url", "must be an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise self.fail(f"{where}.base_url", "must have no query or fragment")
        insecure = table.get("allow_insecure_http", False)
        if not isinstance(insecure, bool):
            raise self.fail(f"{where}.allow_insecure_http", "must be true or false")
        if parts.scheme == "http" and not insecure and not _is_loopback(parts.hostname):
            # Personal data and keys never travel in clear text by accident (interfaces.md).
            raise self.fail(
                f"{where}.base_url",
                f"http:// to a host that is not loopback ({parts.hostname}): use https://, "
                f"or set allow_insecure_http = true in {where}",
            )
        # Paths of partner-api.md start with "/", so a trailing one would double it.
        return url.rstrip("/")

    def api_key(self, table: dict[str, Any], where: str) -> str:
        if "api_key_env" not in table:
            if self.builtin:
                return SIMULATOR_API_KEY
            raise self.fail(
                f"{where}.api_key_env",
                "required: name the environment variable that holds this partner's API key",
            )
        name = table["api_key_env"]
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise self.fail(f"{where}.api_key_env", "must be an environment variable name")
        key = self.env.get(name)
        if not key:
            raise self.fail(f"{where}.api_key_env", f"environment variable {name} is not set")
        return key

    def positive_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(where, "must be a positive integer")
        return value

    def positive_number(self, value: Any, where: str) -> float:
        number = self.non_negative_number(value, where)
        if number <= 0:
            raise self.fail(where, "must be a positive number")
        return number

    def non_negative_number(self, value: Any, where: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise self.fail(where, "must be a non-negative number")
        return float(value)


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
