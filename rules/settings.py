"""Wave settings of wave-rules.md: the one definition of each setting (type, bounds,
default, meaning), and the dates they imply.

The CLI's flags (cli.py), the drop folder's TOML (tasks/drop.py), the deployments'
parameters (flows/operations.py) and the `Wave` table's defaults (models/tables.py)
are all derived from `WaveSettings`: a new setting is one field here.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

JAKARTA = ZoneInfo("Asia/Jakarta")


class SettingsError(ValueError):
    """A wave setting the rules refuse; the message names the setting."""


# Shared with the deployments' parameters: the UI's run form shows these bounds and the
# server refuses a value outside them when the run is created.
WaveId = Annotated[int, Field(ge=1, le=1_000_000, description="The wave's number.")]
Quota = Annotated[
    int,
    Field(
        ge=1,
        le=100_000_000,
        description="Participants to fund; may be raised (never lowered) while the wave "
        "runs; required when the wave is created.",
    ),
]


class WaveSettings(BaseModel):
    """A wave's settings, recorded with the wave. Refused values raise SettingsError
    naming the setting ("min_age: must be ...")."""

    # strict: True is not a number and "5" is not a quota, wherever the value comes from.
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    wave_id: WaveId
    quota: Quota
    lottery_seed: Annotated[
        str,
        Field(
            min_length=1,
            description="Seed of the draw (default: a fresh random one); its SHA-256 is "
            "published when the wave is created, the seed itself at the draw.",
        ),
    ]
    reference_date: Annotated[
        date, Field(description="Date ages are computed on (default: today, Asia/Jakarta).")
    ]
    min_age: Annotated[int, Field(ge=0, le=120, description="Youngest age accepted.")] = 18
    min_test_score: Annotated[
        int, Field(ge=0, le=100, description="Pass mark of the motivation and ability test.")
    ] = 60
    name_score_min: Annotated[
        int, Field(ge=0, le=100, description="Least registry name-similarity score accepted.")
    ] = 80
    household_cap: Annotated[
        int,
        Field(
            ge=0, le=1000, description="Most participants per family card over all waves; 0 = off."
        ),
    ] = 2
    allocation: Annotated[
        Literal["national", "provincial"],
        Field(description="One national quota, or the quota split over provinces."),
    ] = "national"
    backfill: Annotated[
        bool,
        Field(
            description="Replace a drawn registrant whose payout account fails, from the waitlist."
        ),
    ] = True
    training_balance: Annotated[
        int,
        Field(ge=1, le=1_000_000_000, description="Rupiah credited to each participant."),
    ] = 1_000_000
    sign_off: Annotated[
        int,
        Field(ge=0, le=2, description="Approvers needed before any credit (0: no sign-off)."),
    ] = 0
    # lifecycle.md: after the balance.
    first_training_days: Annotated[
        int,
        Field(
            ge=1, le=365, description="Days after the credit to buy a first training, else revoked."
        ),
    ] = 30
    incentive_amount: Annotated[
        int, Field(ge=0, le=1_000_000_000, description="Rupiah per incentive installment.")
    ] = 600_000
    incentive_installments: Annotated[
        int, Field(ge=0, le=24, description="Incentive installments after the first training.")
    ] = 4
    incentive_interval_days: Annotated[
        int, Field(ge=1, le=365, description="Days between incentive installments.")
    ] = 30
    survey_amount: Annotated[
        int, Field(ge=0, le=1_000_000_000, description="Rupiah per survey answered.")
    ] = 50_000
    surveys: Annotated[
        int, Field(ge=0, le=12, description="Surveys a participant is asked to answer.")
    ] = 3

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_first_error(exc)) from None

    def as_dict(self) -> dict:
        return self.model_dump()


def defaults() -> dict[str, Any]:
    """Setting name -> its default, for the settings that have one."""
    return {
        name: info.default
        for name, info in WaveSettings.model_fields.items()
        if not info.is_required()
    }


_STRICT = ConfigDict(strict=True)


def check_setting(name: str, value: Any) -> Any:
    """`value` checked as the setting `name` alone (e.g. one key of a drop-folder TOML);
    SettingsError names it."""
    info = WaveSettings.model_fields.get(name)
    if info is None:
        raise SettingsError(f"{name}: unknown setting")
    # A datetime is a date to Python; a TOML date-time is not a reference date.
    if isinstance(value, datetime) and info.annotation is date:
        raise SettingsError(f"{name}: must be a date (YYYY-MM-DD), not a date and time")
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[info.annotation, info],  # type: ignore[arg-type]
        config=_STRICT,
    )
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise SettingsError(f"{name}: {_message(exc.errors()[0])}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = ".".join(str(p) for p in error["loc"]) or "settings"
    return f"{name}: {_message(error)}"


def _message(error: Any) -> str:
    # Never the value itself: a seed must not reach a log or an error line.
    if error["type"] == "missing":
        return "required"
    if error["type"] == "extra_forbidden":
        return "unknown setting"
    msg = str(error["msg"])
    for start in ("Input should", "Value should", "String should"):
        msg = msg.replace(start, "must")
    return msg


def jakarta_today(now: datetime | None = None) -> date:
    return (now or datetime.now(JAKARTA)).astimezone(JAKARTA).date()


def default_rollout_deadline(draw_day: date) -> datetime:
    """06:00 Asia/Jakarta the morning after the draw, as naive UTC."""
    local = datetime.combine(draw_day + timedelta(days=1), time(6, 0), tzinfo=JAKARTA)
    return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
