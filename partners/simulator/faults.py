"""Fault injection for the simulator: the faults file, and reproducible per-request decisions."""

import dataclasses
import hashlib
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Request-level faults, drawn from one uniform number in this order (mutually exclusive).
REQUEST_FAULTS = ("429", "5xx", "drop", "timeout", "lost_answer")
# Faults that mangle a 200 answer's body (one draw, mutually exclusive).
BODY_FAULTS = ("bad_json", "truncated_json")
# Per-item faults (one draw per item key, mutually exclusive).
ITEM_FAULTS = ("missing_result", "duplicate_result", "unknown_status")
SERVER_ERRORS = (500, 502, 503, 504)
# "lost_answer" (the call takes effect, then the client gets a 503) is drawn only for calls
# that take effect: the issuer's credits and revocations, the payment partners'
# disbursements. It is configured per partner like every rate: `rate_lost_answer` under
# [partners.card-issuer] (credits and revocations) or [partners.<provider id>]
# (disbursements); other calls of those partners (look-ups, statements, account checks) and
# other partners never draw it.


class FaultsError(ValueError):
    """A faults file or admin payload that cannot be used; the message names the key."""


@dataclass(frozen=True)
class PartnerFaults:
    """The faults and limits of one partner (the [default] table merged with its own)."""

    latency_ms: int = 0
    rate_429: float = 0.0
    retry_after_s: int = 1
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    rate_timeout: float = 0.0
    timeout_s: float = 30.0
    rate_bad_json: float = 0.0
    rate_truncated_json: float = 0.0
    rate_missing_result: float = 0.0
    rate_duplicate_result: float = 0.0
    rate_unknown_key: float = 0.0
    rate_unknown_status: float = 0.0
    rate_lost_answer: float = 0.0
    down: bool = False
    api_key: str | None = None
    batch_size: int = 1000
    max_rps: float | None = None

    @property
    def draws(self) -> bool:
        """Whether any random fault is configured (else no hashing or counting is done)."""
        return any(getattr(self, name) > 0 for name in _RATE_KEYS)

    @property
    def item_draws(self) -> bool:
        return any(getattr(self, f"rate_{name}") > 0 for name in ITEM_FAULTS)


_FIELDS = {f.name: f for f in dataclasses.fields(PartnerFaults)}
_RATE_KEYS = tuple(name for name in _FIELDS if name.startswith("rate_"))
_INT_KEYS = {"latency_ms", "retry_after_s", "batch_size"}
_FLOAT_KEYS = {"timeout_s", "max_rps"}


@dataclass(frozen=True)
class FaultsConfig:
    """The whole faults configuration: a fault seed, defaults, and per-partner overrides."""

    seed: str = "faults"
    default: PartnerFaults = PartnerFaults()
    partners: Mapping[str, PartnerFaults] = field(default_factory=dict)

    def for_partner(self, partner_id: str) -> PartnerFaults:
        return self.partners.get(partner_id, self.default)


def _check_table(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise FaultsError(f"{where} must be a table")
    checked: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{where}.{key}"
        if key not in _FIELDS:
            raise FaultsError(f"unknown key {name!r}")
        if key == "down":
            ok = isinstance(value, bool)
        elif key == "api_key":
            ok = isinstance(value, str) and value != ""
        elif key in _INT_KEYS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            ok = ok and (key != "batch_size" or value >= 1)
        elif key in _FLOAT_KEYS:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and 0 <= value <= 1
        if not ok:
            raise FaultsError(f"invalid value for {name!r}: {value!r}")
        checked[key] = float(value) if key.startswith("rate_") or key in _FLOAT_KEYS else value
    return checked


def faults_from_dict(data: Mapping[str, Any]) -> FaultsConfig:
    """Build a config from the faults file's shape: {seed, default, partners: {id: {...}}}."""
    if not isinstance(data, Mapping):
        raise FaultsError("the faults configuration must be a table")
    for key in data:
        if key not in ("seed", "default", "partners"):
            raise FaultsError(f"unknown key {key!r}")
    seed = data.get("seed", "faults")
    if not isinstance(seed, str):
        raise FaultsError(f"invalid value for 'seed': {seed!r}")
    default_values = _check_table(data.get("default", {}), "default")
    default = PartnerFaults(**default_values)
    raw_partners = data.get("partners", {})
    if not isinstance(raw_partners, Mapping):
        raise FaultsError("partners must be a table of tables")
    partners = {
        pid: PartnerFaults(**{**default_values, **_check_table(table, f"partners.{pid}")})
        for pid, table in raw_partners.items()
    }
    return FaultsConfig(seed=seed, default=default, partners=partners)


def load_faults(path: str | Path) -> FaultsConfig:
    """Read a faults TOML file; unknown keys and out-of-range values are refused."""
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise FaultsError(f"{path}: {exc}") from exc
    return faults_from_dict(data)


def _unit(digest: bytes, offset: int) -> float:
    return int.from_bytes(digest[offset : offset + 7], "big") / float(1 << 56)


@dataclass(frozen=True)
class Decision:
    """What to do with one request: at most one request fault, one body fault, extra key."""

    request_fault: str | None
    status_5xx: int
    body_fault: str | None
    unknown_key: bool
    salt: bytes
    faults: PartnerFaults

    def item_fault(self, key: str) -> str | None:
        """The per-item fault for the result of `key`, drawn from the request's salt and key."""
        f = self.faults
        u = _unit(hashlib.sha256(self.salt + key.encode()).digest(), 0)
        for name in ITEM_FAULTS:
            rate = getattr(f, f"rate_{name}")
            if u < rate:
                return name
            u -= rate
        return None


class FaultDecider:
    """Reproducible fault decisions: sha256(fault seed, partner, sha256(body), n), where n
    counts how often that partner saw that exact body, so a retry gets the next decision."""

    def __init__(self, config: FaultsConfig) -> None:
        self.config = config
        self._seen: dict[tuple[str, bytes], int] = {}
        self._lock = threading.Lock()

    def decide(
        self, partner_id: str, body: bytes, faults: PartnerFaults, *, effects: bool = False
    ) -> Decision:
        """The decision for one call; `effects`: the call changes state (credits,
        revocations, disbursements), so that it may take effect and lose its answer."""
        body_hash = hashlib.sha256(body).digest()
        with self._lock:
            n = self._seen.get((partner_id, body_hash), 0)
            self._seen[(partner_id, body_hash)] = n + 1
        salt = hashlib.sha256(
            f"{self.config.seed}|{partner_id}|{body_hash.hex()}|{n}".encode()
        ).digest()
        request_fault = None
        u = _unit(salt, 0)
        for name in REQUEST_FAULTS:
            if name == "lost_answer" and not effects:
                continue
            rate = getattr(faults, f"rate_{name}")
            if u < rate:
                request_fault = name
                break
            u -= rate
        body_fault = None
        u = _unit(salt, 7)
        for name in BODY_FAULTS:
            rate = getattr(faults, f"rate_{name}")
            if u < rate:
                body_fault = name
                break
            u -= rate
        return Decision(
            request_fault=request_fault,
            status_5xx=SERVER_ERRORS[salt[21] % len(SERVER_ERRORS)],
            body_fault=body_fault,
            unknown_key=_unit(salt, 14) < faults.rate_unknown_key,
            salt=salt,
            faults=faults,
        )
