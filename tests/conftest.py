"""Shared fixtures: a real database (SQLite, and PostgreSQL when configured), a Prefect
test server started once per session, and the partner simulator over real HTTP."""

from __future__ import annotations

import os
import tempfile

# Prefect keeps its state in a throwaway home, never the developer's ~/.prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prakerja-prefect-"))
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A CLI run without PREFECT_API_URL starts Prefect's temporary server; under CI's
# parallel shards on two cores it can take longer than Prefect's default 20 s to answer.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import pytest  # noqa: E402

POSTGRES_URL = os.environ.get("PRAKERJA_TEST_POSTGRES_URL")
DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def _fresh_postgres() -> str:
    from tests.schema_reset import drop_program_schema

    drop_program_schema(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path}/prakerja.db" if request.param == "sqlite" else _fresh_postgres()
    # The CLI and workers read it from the environment, like in production.
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", url)
    return url


@pytest.fixture
def sessions(database_url):
    from runtime import app as runtime

    rt = runtime.configure(database=database_url)
    yield rt.sessions
    runtime.reset()


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# The `slow` marker (pyproject.toml): tests that start a Prefect server, run whole waves,
# the CLI or the dashboard in subprocesses, drive a browser, or measure scale or many
# generated examples. Applied
# here by place and by fixture rather than test by test; `scripts/test -m "not slow"`
# runs the rest in a couple of minutes (README, "Two commands").
SLOW_DIRS = {"crash", "e2e", "ops", "scale"}
SLOW_FILES = {
    "test_cli.py",
    "test_cli_changed_export_and_formula_cells.py",
    "portal/test_browser.py",
    "portal/test_gateway_and_failures.py",  # the dashboard in uvicorn subprocesses
    "faults/test_intake_properties.py",  # hypothesis: hundreds of exports through intake
}
SLOW_FIXTURES = {"prefect_server"}


def pytest_collection_modifyitems(config, items) -> None:
    from pathlib import Path

    here = Path(__file__).parent
    for item in items:
        place = Path(item.path).relative_to(here)
        if (
            place.parts[0] in SLOW_DIRS
            or place.as_posix() in SLOW_FILES
            or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.slow)
