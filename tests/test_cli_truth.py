"""What the command line tells an operator is true (issue 12, section 2): run in-process
with click's CliRunner, each against a fresh SQLite database."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from datetime import date, datetime, timedelta

import pytest
import requests
from click.testing import CliRunner

import cli
from models.db import init_db, make_engine, session_factory
from models.enums import WaveStatus
from models.tables import Wave
from rules.settings import WaveSettings
from tasks.waves import create_or_resume_wave, lease_owner_for
from tests.cli_process import ROOT, run_cli


@pytest.fixture
def db_url(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path}/truth.db"
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", url)
    monkeypatch.delenv("PRAKERJA_PARTNERS", raising=False)
    return url


def invoke(args: list[str]):
    return CliRunner().invoke(cli.main, args)


def make_wave(url: str, wave_id: int = 1, **columns) -> None:
    engine = make_engine(url)
    init_db(engine)
    sessions = session_factory(engine)
    settings = WaveSettings(
        wave_id=wave_id, quota=5, lottery_seed="s", reference_date=date(2026, 11, 28)
    )
    create_or_resume_wave(sessions, settings, source_path=None, source_sha256=None, given=set())
    with sessions() as session, session.begin():
        row = session.get(Wave, wave_id)
        for name, value in columns.items():
            setattr(row, name, value)
    engine.dispose()


def no_flow(*_args, **_kwargs):
    raise AssertionError("the wave flow ran")


def test_running_a_closed_wave_says_so_and_runs_nothing(db_url, monkeypatch):
    make_wave(db_url, status=WaveStatus.CLOSED)
    monkeypatch.setattr("flows.wave.run_wave_flow", no_flow)
    result = invoke(["wave", "run", "--wave", "1"])
    assert result.exit_code == 0, result.stderr
    assert "wave 1 is closed: nothing to do" in result.stderr
    assert "resumed" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_run_refused_as_busy_does_not_say_it_resumed_the_wave(db_url, monkeypatch):
    # A live process on this host (this one) holds the lease.
    make_wave(
        db_url,
        lease_owner=lease_owner_for(os.getpid()),
        lease_expires_at=datetime.utcnow() + timedelta(seconds=60),
    )
    monkeypatch.setattr("flows.wave.run_wave_flow", no_flow)
    result = invoke(["wave", "run", "--wave", "1"])
    assert result.exit_code == cli.EXIT_BUSY, result.stderr
    assert "being run by another live process" in result.stderr
    assert "resumed" not in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["123", "--reason", "x"], "NIK: must be 16 digits (got 3 characters)"),
        (["3201000000000001", "--reason", "  "], "--reason: required"),
    ],
)
def test_blacklist_add_names_its_argument_not_a_line(db_url, args, named):
    result = invoke(["blacklist", "add", *args])
    assert result.exit_code == cli.EXIT_REFUSED
    assert result.stderr == f"error: {named}\n"
    assert "line" not in result.stderr


def test_blacklist_import_still_names_the_line(db_url, tmp_path):
    listed = tmp_path / "revoked.csv"
    listed.write_text("nik,reason\n3201000000000001,fraud\n12,typo\n", encoding="utf-8")
    result = invoke(["blacklist", "import", str(listed)])
    assert result.exit_code == cli.EXIT_REFUSED
    assert "line 3: nik: must be 16 digits" in result.stderr


@pytest.mark.parametrize(
    "data",
    [b"", b"\xef\xbb\xbf", b"\n\n", b"\xef\xbb\xbf  \r\n\t\n"],
    ids=["0 bytes", "BOM", "newlines", "BOM and blanks"],
)
def test_an_empty_export_is_refused_as_empty_naming_the_file(db_url, tmp_path, data):
    export = tmp_path / "empty.csv"
    export.write_bytes(data)
    result = invoke(["wave", "run", "--wave", "1", "--registrants", str(export), "--quota", "5"])
    assert result.exit_code == cli.EXIT_REFUSED
    assert (
        result.stderr
        == f"error: --registrants {export}: the file is empty: no header row, no data rows\n"
    )
    assert not (tmp_path / "truth.db").exists()


def test_the_simulator_on_a_busy_port_says_so_in_one_line_without_its_url():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke(["simulator", "--port", str(port)])
    assert result.exit_code == cli.EXIT_ERROR
    assert result.stderr == (
        f"error: the partner simulator cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_the_simulator_prints_its_url_once_bound_with_the_port_it_got():
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "simulator", "--port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        match = re.match(r"partner simulator on http://127\.0\.0\.1:(\d+) ", line)
        assert match, line
        url = f"http://127.0.0.1:{match.group(1)}/_admin/stats"
        assert requests.get(url, timeout=10).ok
    finally:
        proc.terminate()
        proc.wait(timeout=20)


UNREACHABLE = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "command", [["wave", "run", "--wave", "1"], ["wave", "report", "--wave", "1"]]
)
def test_a_database_that_cannot_be_reached_is_one_line_naming_it_without_its_password(
    monkeypatch, command
):
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", UNREACHABLE)
    monkeypatch.delenv("PRAKERJA_PARTNERS", raising=False)
    result = invoke(command)
    assert result.exit_code == cli.EXIT_ERROR
    assert result.stderr == (
        "error: the program database (PRAKERJA_DATABASE_URL="
        "postgresql+psycopg://postgres:***@127.0.0.1:1/x) cannot be opened: Connection refused\n"
    )


def test_a_sqlite_database_in_a_folder_that_cannot_be_made_names_the_folder(monkeypatch):
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", "sqlite:////proc/no-such-folder/x.db")
    result = invoke(["wave", "report", "--wave", "1"])
    assert result.exit_code == cli.EXIT_ERROR
    assert result.stderr.count("\n") == 1
    assert "sqlite:////proc/no-such-folder/x.db" in result.stderr
    assert "cannot be opened: /proc/no-such-folder: " in result.stderr


def test_the_traceback_of_a_database_failure_comes_with_v_only_and_no_password():
    env = dict(os.environ, PRAKERJA_DATABASE_URL=UNREACHABLE)
    quiet = run_cli(["wave", "report", "--wave", "1"], env, timeout=120)
    loud = run_cli(["-v", "wave", "report", "--wave", "1"], env, timeout=120)
    assert quiet.returncode == loud.returncode == cli.EXIT_ERROR
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert "s3cret" not in quiet.stderr + loud.stderr


def test_export_to_a_missing_folder_is_refused_naming_the_folder(db_url, tmp_path):
    make_wave(db_url)
    out = tmp_path / "no" / "such" / "outcomes.csv"
    result = invoke(["wave", "export", "--wave", "1", "--out", str(out)])
    assert result.exit_code == cli.EXIT_REFUSED
    assert result.stderr == f"error: --out {out}: no such folder: {tmp_path / 'no' / 'such'}\n"
