"""rules.settings.WaveSettings: the one definition of a wave's settings, and what is
derived from it (the CLI's flags, the drop folder's TOML, the Wave table's defaults)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from click.testing import CliRunner

from rules.settings import SettingsError, WaveSettings, check_setting, defaults

REQUIRED = {"wave_id": 1, "quota": 5, "lottery_seed": "s", "reference_date": date(2026, 11, 26)}


def test_the_defaults_are_the_spec_table():
    assert defaults() == {
        "min_age": 18,
        "min_test_score": 60,
        "name_score_min": 80,
        "household_cap": 2,
        "allocation": "national",
        "backfill": True,
        "training_balance": 1_000_000,
        "sign_off": 0,
        # lifecycle.md's settings
        "first_training_days": 30,
        "incentive_amount": 600_000,
        "incentive_installments": 4,
        "incentive_interval_days": 30,
        "survey_amount": 50_000,
        "surveys": 3,
    }
    s = WaveSettings(**REQUIRED)
    assert s.as_dict() == {**REQUIRED, **defaults()}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"wave_id": 0}, "wave_id: must be greater than or equal to 1"),
        ({"quota": 0}, "quota: must be greater than or equal to 1"),
        ({"quota": True}, "quota: must be a valid integer"),
        ({"quota": "5"}, "quota: must be a valid integer"),
        ({"lottery_seed": ""}, "lottery_seed: must have at least 1 character"),
        ({"min_age": 121}, "min_age: must be less than or equal to 120"),
        ({"min_test_score": -1}, "min_test_score: must be greater than or equal to 0"),
        ({"household_cap": -1}, "household_cap: must be greater than or equal to 0"),
        ({"allocation": "regional"}, "allocation: must be 'national' or 'provincial'"),
        ({"backfill": 1}, "backfill: must be a valid boolean"),
        ({"training_balance": 1.5}, "training_balance: must be a valid integer"),
        ({"quotta": 6}, "quotta: unknown setting"),
        ({"sign_off": 3}, "sign_off: must be less than or equal to 2"),
    ],
)
def test_a_refused_setting_is_named(values, message):
    with pytest.raises(SettingsError) as caught:
        WaveSettings(**{**REQUIRED, **values})
    assert str(caught.value) == message


def test_a_missing_setting_is_named_and_a_refusal_never_shows_the_seed():
    with pytest.raises(SettingsError, match="^quota: required$"):
        WaveSettings(wave_id=1, lottery_seed="s", reference_date=date(2026, 1, 1))
    with pytest.raises(SettingsError) as caught:
        WaveSettings(**{**REQUIRED, "lottery_seed": 123456789})
    assert "123456789" not in str(caught.value)


def test_settings_are_frozen_and_survive_a_trip_to_another_process():
    s = WaveSettings(**REQUIRED)
    with pytest.raises(Exception):  # noqa: B017, PT011 - pydantic's frozen-instance error
        s.quota = 9  # type: ignore[misc]
    assert WaveSettings(**s.model_dump()) == s


def test_one_setting_alone_is_checked_as_in_the_model():
    assert check_setting("quota", 200_000) == 200_000
    assert check_setting("reference_date", date(2026, 11, 26)) == date(2026, 11, 26)
    for name, value, said in [
        ("quota", 0, "quota: must be greater than or equal to 1"),
        ("quota", True, "quota: must be a valid integer"),
        ("reference_date", datetime(2026, 11, 26, 10), "reference_date: must be a date"),
        ("colour", "red", "colour: unknown setting"),
    ]:
        with pytest.raises(SettingsError, match=f"^{said}"):
            check_setting(name, value)


def test_the_wave_table_takes_its_defaults_from_the_settings():
    from models.tables import Wave

    columns = Wave.__table__.columns  # type: ignore[attr-defined]
    for name, info in WaveSettings.model_fields.items():
        assert name in columns, name
        if not info.is_required():
            assert Wave.model_fields[name].default == info.default, name


def test_every_setting_but_the_wave_number_is_a_flag_of_wave_run_with_its_bounds():
    from cli import main

    result = CliRunner().invoke(main, ["wave", "run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in WaveSettings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert (flag in result.output) == (name != "wave_id"), flag
    assert "--backfill / --no-backfill" in result.output
    assert "[national|provincial]" in result.output
    assert "Youngest age accepted. [default: 18]" in result.output
    assert "(0: no sign-off). [default: 0]" in result.output  # 0 is not "off"
    assert "from the waitlist. [default: on]" in result.output
    refused = CliRunner().invoke(main, ["wave", "run", "--wave", "1", "--min-age", "130"])
    assert refused.exit_code == 2
    assert "--min-age" in refused.output and "0<=x<=120" in refused.output


def test_a_choice_alone_is_checked():
    assert check_setting("allocation", "provincial") == "provincial"
    with pytest.raises(SettingsError, match="^allocation: must be 'national' or 'provincial'"):
        check_setting("allocation", "regional")
