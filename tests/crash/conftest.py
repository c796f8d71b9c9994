"""Helpers for the crash tests: real `wave run` processes killed with SIGKILL, the partner
simulator in its own process (it outlives the killed run), and read-only looks at the
program database to reach each kill point.

The runs use the session's Prefect test server (PREFECT_API_URL), so that a run costs no
temporary server start; a killed run leaves its flow run "Running" there, which is fine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cli_process import run_cli
from tests.e2e.oracle import expected_outcomes, read_truth

ROOT = Path(__file__).resolve().parents[2]
SEED = "crash-seed"
LOTTERY = "crash-lottery"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 300
QUOTA = 40
BATCH = 5  # PRAKERJA_BATCH_SIZE: 8 rollout batches, 8 message batches
STEP_TIMEOUT = 90.0  # no single wait of a test may take longer
SIM_AUTH = {"Authorization": "Bearer simulator"}


# ------------------------------------------------------------------ export, truth, oracle
@dataclass
class WaveFiles:
    export: Path
    expected: dict[int, tuple[str, str]]


@pytest.fixture(scope="session")
def crash_wave(tmp_path_factory) -> WaveFiles:
    from partners.simulator.generate import generate_export

    d = tmp_path_factory.mktemp("crash-wave")
    export, truth = d / "wave.csv", d / "truth.csv"
    generate_export(
        export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE, truth_path=truth
    )
    rows = read_truth(str(truth), str(export))
    return WaveFiles(export, expected_outcomes(rows, seed=LOTTERY, quota=QUOTA))


# ------------------------------------------------------------------ the simulator process
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(v)


def faults_toml(faults: dict) -> str:
    lines = [f"seed = {_toml_value(faults.get('seed', 'crash-faults'))}"]
    for pid, table in faults.get("partners", {}).items():
        lines.append(f'\n[partners."{pid}"]')
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


class Sim:
    """The simulator as a separate process, its admin routes, statement and journal."""

    def __init__(self, directory: Path, faults: dict) -> None:
        from partners.simulator.server import SimulatorProcess

        self.faults_path = directory / "faults.toml"
        self.faults_path.write_text(faults_toml(faults))
        self.journal_path = directory / "partner-state.jsonl"
        self.process = SimulatorProcess(
            SEED, faults_path=self.faults_path, state_path=self.journal_path
        )
        self.http = requests.Session()

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def start(self) -> Sim:
        self.process.start()
        return self

    def stop(self) -> None:
        self.http.close()
        self.process.stop()

    def stats(self) -> dict[str, Any]:
        return self.http.get(f"{self.base_url}/_admin/stats", timeout=5).json()

    def set_faults(self, faults: dict) -> None:
        r = self.http.post(f"{self.base_url}/_admin/faults", json=faults, timeout=5)
        assert r.status_code == 200, r.text

    def calls(self, partner: str) -> int:
        return int(self.stats()["calls"].get(partner, 0))

    def statement(self, wave_id: int = 1) -> list[dict]:
        entries: list[dict] = []
        after = None
        while True:
            params = {"reference": f"wave-{wave_id}/training", "limit": 1000}
            if after is not None:
                params["after"] = after
            r = self.http.get(
                f"{self.base_url}/issuer/v1/statements", params=params, headers=SIM_AUTH, timeout=10
            )
            assert r.status_code == 200, r.text
            page = r.json()
            entries += page["entries"]
            after = page["next"]
            if after is None:
                return entries

    def journal(self) -> list[dict]:
        """What the issuer applied and the gateway accepted, one line per new key."""
        out = []
        for raw in self.journal_path.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                out.append(json.loads(raw))
        return out


# ------------------------------------------------------------------ the partners file
def partners_file(path: Path, base_url: str, overrides: dict[str, dict] | None = None) -> Path:
    """The built-in partners file pointed at `base_url`, with per-section overrides."""
    from partners.config import simulator_partners_text

    # A file in $PRAKERJA_PARTNERS names a key variable in every section (run_env sets it).
    data = tomllib.loads(simulator_partners_text(base_url))
    overrides = overrides or {}
    out: list[str] = []

    def section(header: str, name: str, table: dict) -> None:
        table = {**table, **overrides.get(name, {})}
        out.append(header)
        out.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
        out.append("")

    for name, value in data.items():
        if isinstance(value, list):
            for table in value:
                section(f"[[{name}]]", name, table)
        else:
            section(f"[{name}]", name, value)
    path.write_text("\n".join(out))
    return path


# ------------------------------------------------------------------ the program database
class ProgramDB:
    """Read-only looks at the program's SQLite database while a run writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        if not self.path.exists():
            return []
        try:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        except sqlite3.OperationalError:
            return []
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:  # not created yet
            if "no such table" in str(exc):
                return []
            raise
        finally:
            con.close()

    def one(self, sql: str, *params: Any) -> Any:
        rows = self.rows(sql, *params)
        return rows[0][0] if rows else None

    def snapshot(self) -> dict[str, Any]:
        """Counts that name a moment of the rollout and of the SMS sending."""
        ledger = Counter(dict(self.rows("SELECT status, count(*) FROM ledger GROUP BY status")))
        states = Counter(dict(self.rows("SELECT state, count(*) FROM registrant GROUP BY state")))
        messages = Counter(dict(self.rows("SELECT status, count(*) FROM message GROUP BY status")))
        return {
            "ledger": ledger,
            "ledger_rows": sum(ledger.values()),
            "pending_attempted": self.one(
                "SELECT count(*) FROM ledger WHERE status='PENDING' AND attempts>0"
            )
            or 0,
            "applied": ledger["APPLIED"],
            "states": states,
            "confirmed": states["CONFIRMED"],
            "credited": states["CREDITED"],
            "messages": sum(messages.values()),
            "queued": messages["QUEUED"],
            "sent": messages["ACCEPTED"] + messages["REJECTED"],
        }

    def lease_owner(self) -> str | None:
        return self.one("SELECT lease_owner FROM wave WHERE wave_id=1")


# ------------------------------------------------------------------ `wave run` processes
def wave_run_args(export: Path, wave_id: int = 1) -> list[str]:
    return [
        "wave",
        "run",
        "--wave",
        str(wave_id),
        "--registrants",
        str(export),
        "--quota",
        str(QUOTA),
        "--lottery-seed",
        LOTTERY,
        "--reference-date",
        REFERENCE.isoformat(),
    ]


class WaveProcess:
    """`python -m cli ...` in its own session (process group), so that SIGKILL reaches
    everything it started; its output goes to files kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        self.name = name
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        self.started = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """kill -9 of the whole process group, then reap it (a zombie would look alive)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def wait(self, timeout: float = STEP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not finish within {timeout:.0f} s\n{self.tail()}")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def tail(self, n: int = 4000) -> str:
        return f"--- {self.name} stderr (tail) ---\n{self.stderr()[-n:]}"

    def owns_lease(self, db: ProgramDB) -> bool:
        owner = db.lease_owner() or ""
        return owner.startswith(f"{socket.gethostname()}:{self.pid}:")


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    *,
    timeout: float = STEP_TIMEOUT,
    run: WaveProcess | None = None,
    every: float = 0.03,
) -> Any:
    """Polls `predicate` until it is truthy; fails (never hangs) after `timeout`, or as soon
    as `run` has exited without the moment being reached."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if run is not None and not run.alive():
            pytest.fail(f"{run.name} exited ({run.proc.returncode}) before: {what}\n{run.tail()}")
        if time.monotonic() > deadline:
            if run is not None:
                run.kill()
            pytest.fail(
                f"not reached within {timeout:.0f} s: {what}" + (f"\n{run.tail()}" if run else "")
            )
        time.sleep(every)


@pytest.fixture
def run_env(prefect_server, tmp_path) -> dict[str, str]:
    """The environment of every `prakerja` process of a test (partners file set later)."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PRAKERJA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'program.db'}"
    env["PRAKERJA_BATCH_SIZE"] = str(BATCH)
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env.pop("PRAKERJA_PARTNERS", None)
    env["PRAKERJA_SIMULATOR_API_KEY"] = "simulator"  # named by partners_file's sections
    return env


def exported_outcomes(env: dict[str, str], out: Path) -> dict[int, tuple[str, str]]:
    import csv

    done = run_cli(["wave", "export", "--wave", "1", "--out", str(out)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, newline="", encoding="utf-8") as fh:
        return {int(r["line"]): (r["outcome"], r["reason"]) for r in csv.DictReader(fh)}


# ------------------------------------------------------------------ kill points in every stage
# (tests/crash/test_kill_stages.py): the same helpers on PostgreSQL too, smaller intake
# transactions, and the wave's worker processes.
INTAKE_CHUNK_ROWS = 1  # rows per intake transaction in these runs (20,000 in production)


class PostgresProgramDB(ProgramDB):
    """ProgramDB's read-only looks, on a PostgreSQL program database."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.url = url
        self.engine = create_engine(url, pool_size=1, max_overflow=0)

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        from sqlalchemy import text
        from sqlalchemy.exc import ProgrammingError

        assert not params, "PostgresProgramDB takes SQL without parameters"
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                return [tuple(r) for r in conn.execute(text(sql)).all()]
        except ProgrammingError as exc:  # not created yet
            if "does not exist" in str(exc):
                return []
            raise

    def close(self) -> None:
        self.engine.dispose()


def empty_postgres(url: str) -> None:
    """Drops the program's tables: each test starts from an empty database."""
    from tests.schema_reset import drop_program_schema

    drop_program_schema(url)


class ChunkedIntakeRun(WaveProcess):
    """`wave run` (the CLI's own entry point) with intake committing INTAKE_CHUNK_ROWS
    rows per transaction, so that 300 rows are loaded in many steps, like a big export's
    chunks, and a kill can land between two of them."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        self.name = name
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        self.started = time.monotonic()
        boot = (
            "import sys, tasks.intake as intake, cli; "
            f"intake.CHUNK_ROWS = {INTAKE_CHUNK_ROWS}; "
            "sys.argv = ['cli', *sys.argv[1:]]; cli.main()"
        )
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", boot, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    ended: float | None = None

    def kill(self) -> None:
        super().kill()
        self.ended = self.ended or time.monotonic()

    def wait(self, timeout: float = STEP_TIMEOUT) -> int:
        code = super().wait(timeout)
        self.ended = self.ended or time.monotonic()
        return code


def worker_pids(parent: int) -> list[int]:
    """The live worker processes (runtime.workers' pool, started with spawn) of `parent`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        if fields[0] == b"Z" or int(fields[1]) != parent:
            continue
        if b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)
