"""Wave settings of wave-rules.md: defaults, validation, and the dates they imply."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

JAKARTA = ZoneInfo("Asia/Jakarta")


class SettingsError(ValueError):
    """A wave setting the rules refuse; the message names the setting."""


@dataclass(frozen=True)
class WaveSettings:
    wave_id: int
    quota: int
    lottery_seed: str
    reference_date: date
    min_age: int = 18
    min_test_score: int = 60
    name_score_min: int = 80
    household_cap: int = 2
    allocation: str = "national"
    backfill: bool = True
    training_balance: int = 1_000_000
    sign_off: int = 0  # approvers needed before any credit (wave-rules.md)

    def as_dict(self) -> dict:
        return asdict(self)


def jakarta_today(now: datetime | None = None) -> date:
    return (now or datetime.now(JAKARTA)).astimezone(JAKARTA).date()


def default_rollout_deadline(draw_day: date) -> datetime:
    """06:00 Asia/Jakarta the morning after the draw, as naive UTC."""
    local = datetime.combine(draw_day + timedelta(days=1), time(6, 0), tzinfo=JAKARTA)
    return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def validate(s: WaveSettings) -> WaveSettings:
    def need(ok: bool, name: str, msg: str) -> None:
        if not ok:
            raise SettingsError(f"{name}: {msg}")

    need(type(s.wave_id) is int and s.wave_id > 0, "wave_id", "must be a positive integer")
    need(type(s.quota) is int and s.quota > 0, "quota", "must be a positive integer")
    need(
        isinstance(s.lottery_seed, str) and s.lottery_seed != "",
        "lottery_seed",
        "must be non-empty text",
    )
    need(type(s.min_age) is int and 0 <= s.min_age <= 120, "min_age", "must be 0-120")
    need(
        type(s.min_test_score) is int and 0 <= s.min_test_score <= 100,
        "min_test_score",
        "must be 0-100",
    )
    need(
        type(s.name_score_min) is int and 0 <= s.name_score_min <= 100,
        "name_score_min",
        "must be 0-100",
    )
    need(
        type(s.household_cap) is int and s.household_cap >= 0,
        "household_cap",
        "must be 0 (off) or more",
    )
    need(
        s.allocation in ("national", "provincial"),
        "allocation",
        "must be 'national' or 'provincial'",
    )
    need(
        type(s.training_balance) is int and s.training_balance > 0,
        "training_balance",
        "must be a positive integer number of rupiah",
    )
    need(
        type(s.sign_off) is int and 0 <= s.sign_off <= 2,
        "sign_off",
        "must be 0, 1 or 2 approvers",
    )
    return s
