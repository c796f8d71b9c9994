"""models/config.py: every PRAKERJA_* variable in one pydantic-settings model, read once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models.config import Settings, SettingsEnvError, read_settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_lists_every_variable_in_its_configuration_table():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(PRAKERJA_[A-Z_]+)` \|", section, flags=re.M))
    wanted = {Settings.env_name(name) for name in Settings.model_fields}
    assert wanted - listed == set()


def test_values_come_from_the_given_environment_and_empty_means_unset(monkeypatch):
    monkeypatch.setenv("PRAKERJA_BATCH_SIZE", "7")  # the process's: not the given mapping's
    s = read_settings({"PRAKERJA_SQLITE_CACHE_MB": "64", "PRAKERJA_DROP_DIR": ""})
    assert s.sqlite_cache_mb == 64 and s.drop_dir == "var/drop" and s.batch_size == 10_000
    assert read_settings().batch_size == 7


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PRAKERJA_BATCH_SIZE": "many"}, "PRAKERJA_BATCH_SIZE: must be a valid integer"),
        ({"PRAKERJA_SQLITE_CACHE_MB": "0"}, "PRAKERJA_SQLITE_CACHE_MB: must be greater"),
        ({"PRAKERJA_PARTNER_LIMITS": "everywhere"}, "PRAKERJA_PARTNER_LIMITS must be one of"),
        ({"PRAKERJA_TASK_RUNNER": "gpu"}, "PRAKERJA_TASK_RUNNER: must be 'threads' or 'dask'"),
    ],
)
def test_a_refused_value_names_its_variable(env, named):
    with pytest.raises(SettingsEnvError, match=named):
        read_settings(env)


def test_settings_rebuild_in_another_process_secrets_included_but_never_shown():
    secret = "s" * 40
    s = read_settings({"PRAKERJA_PORTAL_SECRET": secret, "PRAKERJA_SHARED_RATE_LIMITS": "1"})
    assert secret not in repr(s)
    assert Settings.model_validate(s.handover()) == s
    env = s.handover_env()
    assert env["PRAKERJA_PORTAL_SECRET"] == secret and env["PRAKERJA_SHARED_RATE_LIMITS"] == "1"
    assert read_settings(env) == s


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://user:s3cr%40t@db.example:5432/prakerja", "user:***@db.example"),
        ("postgresql://prakerja:hunter22@10.0.0.5/prakerja", "prakerja:***@10.0.0.5"),
        ("sqlite:///./var/prakerja.db", "sqlite:///./var/prakerja.db"),
    ],
)
def test_settings_show_no_database_password_nor_secret(url, shown):
    s = read_settings(
        {
            "PRAKERJA_DATABASE_URL": url,
            "PRAKERJA_PORTAL_SECRET": "p" * 40,
            "PRAKERJA_ALERT_WEBHOOK_URL": "https://hooks.example/T0KEN-abc",
        }
    )
    for text in (repr(s), str(s)):
        assert shown in text
        for secret in ("s3cr", "hunter22", "p" * 40, "T0KEN-abc"):
            assert secret not in text
    assert s.database_url == url  # masked when shown only
