"""A real dashboard to test: two real waves run against the partner simulator over HTTP,
wave 1 announced and wave 2 not, and `prakerja portal` as its own process (two workers)
over that database, sending its codes to the simulator's gateway.

Module-scoped per database (SQLite, and PostgreSQL when configured): the waves are run
once per test module. Tests that need a quiet guard table use a NIK of their own.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path

import pytest
import requests

from tests.conftest import DATABASES, POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]
SEED = "portal-seed"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 1500
QUOTA = 80
SECRET = "test-portal-secret-0123456789-abcdefghijklmnop"
MESSAGE = "Hasil gelombang 1 <script>alert('x')</script> & lainnya"
SMALL_WAVE = 120  # registrants of `small_portal_wave`


def _fresh_database(kind: str, folder: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder}/portal.db"
    from tests.schema_reset import drop_program_schema

    drop_program_schema(POSTGRES_URL)
    return POSTGRES_URL


def partners_file(folder: Path, sim_url: str) -> Path:
    """The built-in partners file moved to the simulator's port (its key variable is set
    by PortalWave.env)."""
    from partners.config import simulator_partners_text

    path = folder / "partners.toml"
    path.write_text(simulator_partners_text(sim_url))
    return path


def export_rows(export: Path) -> list[dict[str, str]]:
    with open(export, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@dataclass
class PortalWave:
    """Two waves in a database, with the simulator that ran them still serving."""

    database_url: str
    folder: Path
    sim_url: str
    partners: Path
    export: Path
    sessions: object
    outcomes: dict[int, dict[int, tuple[str, str, str]]] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        e = dict(os.environ)
        e.update(
            PRAKERJA_DATABASE_URL=self.database_url,
            PRAKERJA_PARTNERS=str(self.partners),
            PRAKERJA_SIMULATOR_API_KEY="simulator",  # named by partners_file's sections
            PRAKERJA_PORTAL_SECRET=SECRET,
        )
        e.update(extra)
        return e


def _run_wave(wave_id: int, export: Path, sim_url: str, *, announce: bool, sessions, folder):
    from cli import run_wave_command
    from partners.config import simulator_config
    from readmodels.reporting import export_outcomes
    from tasks.portal_index import announce_wave

    code = run_wave_command(
        wave_id=wave_id,
        registrants=str(export),
        quota=QUOTA,
        lottery_seed=f"portal-lottery-{wave_id}",
        keep_open=False,
        draw_without_pending=False,
        flags={"reference_date": datetime.combine(REFERENCE, dtime())},
        partners_config=simulator_config(sim_url),
        quiet=True,
    )
    assert code == 0
    if announce:
        announce_wave(sessions, wave_id, MESSAGE)
    out = folder / f"outcomes-{wave_id}.csv"
    export_outcomes(sessions, wave_id, out)
    with open(out, newline="", encoding="utf-8") as fh:
        return {int(r["line"]): (r["outcome"], r["reason"], r["nik"]) for r in csv.DictReader(fh)}


@pytest.fixture(scope="module", params=DATABASES)
def portal_wave(request, prefect_server, tmp_path_factory):
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread
    from runtime import app as runtime

    folder = tmp_path_factory.mktemp(f"portal-{request.param}")
    url = _fresh_database(request.param, folder)
    saved = os.environ.get("PRAKERJA_DATABASE_URL")
    os.environ["PRAKERJA_DATABASE_URL"] = url
    export = folder / "wave.csv"
    generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
    with SimulatorThread(SEED) as sim:
        rt = runtime.configure(database=url)
        pw = PortalWave(
            url, folder, sim.base_url, partners_file(folder, sim.base_url), export, rt.sessions
        )
        # Wave 1 announced; wave 2 (the same people registering again) not.
        pw.outcomes[1] = _run_wave(
            1, export, sim.base_url, announce=True, sessions=rt.sessions, folder=folder
        )
        pw.outcomes[2] = _run_wave(
            2, export, sim.base_url, announce=False, sessions=rt.sessions, folder=folder
        )
        try:
            yield pw
        finally:
            runtime.reset()
            if saved is None:
                os.environ.pop("PRAKERJA_DATABASE_URL", None)
            else:
                os.environ["PRAKERJA_DATABASE_URL"] = saved


@pytest.fixture(scope="module", params=DATABASES)
def small_portal_wave(request, tmp_path_factory):
    """A small announced wave (intake only: every row accepted, with its phone) and the
    simulator that receives its codes, per database: quicker than `portal_wave` where
    only sign-in matters. Returns (PortalWave, its rows)."""
    from datetime import datetime

    from models.tables import Wave
    from partners.simulator.server import SimulatorThread
    from runtime import app as runtime
    from tasks.intake import import_export
    from tasks.portal_index import announce_wave
    from tests.tasks.factories import make_wave, person, write_export

    folder = tmp_path_factory.mktemp(f"small-portal-{request.param}")
    url = _fresh_database(request.param, folder)
    rt = runtime.configure(database=url)
    try:
        make_wave(rt.sessions)
        rows = [person(i) for i in range(1, SMALL_WAVE + 1)]
        export = write_export(folder / "wave.csv", rows)
        import_export(rt.sessions, 1, export)
        with rt.sessions() as session, session.begin():
            session.get(Wave, 1).drawn_at = datetime(2026, 11, 28, 12, 0)
        announce_wave(rt.sessions, 1, None)
        with SimulatorThread("small-portal-seed") as sim:
            pw = PortalWave(
                url, folder, sim.base_url, partners_file(folder, sim.base_url), export,
                rt.sessions,
            )  # fmt: skip
            yield pw, rows
    finally:
        runtime.reset()


def free_port() -> int:
    from partners.simulator.server import free_port as _free

    return _free()


@dataclass
class PortalProcess:
    base_url: str
    sim_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def latest_code_seq(self) -> int:
        got = requests.get(f"{self.sim_url}/_admin/messages", params={"last": 1}, timeout=5).json()
        return got["messages"][-1]["seq"] if got["messages"] else 0

    def code_sent_to(self, phone: str, after: int, timeout: float = 5.0) -> str | None:
        """The login code the gateway received for `phone` after sequence `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = requests.get(
                f"{self.sim_url}/_admin/messages",
                params={"template": "login_code", "to": phone, "after": after, "last": 1},
                timeout=5,
            ).json()["messages"]
            if got:
                return got[-1]["params"]["code"]
            time.sleep(0.05)
        return None

    def codes_sent_after(self, after: int) -> list[dict]:
        return requests.get(
            f"{self.sim_url}/_admin/messages",
            params={"template": "login_code", "after": after, "last": 0},
            timeout=5,
        ).json()["messages"]


def start_portal(
    pw: PortalWave,
    *,
    workers: int = 2,
    extra_env: dict | None = None,
    args: tuple[str, ...] = (),
) -> PortalProcess:
    """`prakerja portal` over the wave's database (`args`: more of its flags); an empty
    value in `extra_env` unsets that variable (PRAKERJA_PORTAL_SECRET="": none given)."""
    port = free_port()
    log_path = pw.folder / f"portal-{port}.log"
    log = open(log_path, "wb")
    command = [sys.executable, "-m", "cli", "portal", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers), *args],
        cwd=ROOT,
        env=pw.env(**(extra_env or {})),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"portal exited with {process.returncode}: {log_path.read_text()}")
        try:
            if requests.get(f"{base}/", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("portal did not start in 60 s")
        time.sleep(0.2)
    # With several workers, wait until each answers (they start one after another).
    time.sleep(1.0 if workers > 1 else 0)
    return PortalProcess(base, pw.sim_url, process, log_path)


def stop_portal(p: PortalProcess) -> None:
    p.process.terminate()
    try:
        p.process.wait(10)
    except subprocess.TimeoutExpired:
        p.process.kill()
        p.process.wait(5)


@pytest.fixture(scope="module")
def portal(portal_wave):
    p = start_portal(portal_wave)
    yield p
    stop_portal(p)


def nik_key(nik: str) -> str:
    """The guard row's key for a NIK (store.Store.nik_key with the test secret)."""
    return hmac.new(SECRET.encode(), b"nik:" + nik.encode(), hashlib.sha256).hexdigest()


def sign_in(portal: PortalProcess, nik: str, phone: str) -> requests.Session:
    """A requests session signed in as `nik` with the code the gateway received."""
    s = requests.Session()
    after = portal.latest_code_seq()
    r = s.post(f"{portal.base_url}/api/login", json={"nik": nik}, timeout=10)
    assert r.status_code == 202, r.text
    code = portal.code_sent_to(phone, after)
    assert code is not None, "the gateway received no code"
    r = s.post(f"{portal.base_url}/api/login/verify", json={"nik": nik, "code": code}, timeout=10)
    assert r.status_code == 200, r.text
    return s
