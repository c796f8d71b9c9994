"""Writes the fixtures of tests/migrations: program databases made by a previous release.

    python tests/migrations/make_fixture.py [--postgres URL]

Takes the release's code (`git archive` of release.RELEASE) into a temporary folder and,
with that code only, runs against the partner simulator: wave 1 to the end (then announced),
wave 2 with the card issuer down (left open, every credit pending), one NIK added to the
revocation list; then dumps the database as SQL text into tests/migrations/fixtures/, on
SQLite, and on PostgreSQL when --postgres names a database it may empty.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.migrations import release  # noqa: E402


def checkout(folder: Path) -> Path:
    code = folder / "release"
    code.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", release.RELEASE], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    return code


def cli(code: Path, env: dict[str, str], *args: str, expect: int = 0) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=code, env=env, capture_output=True, text=True
    )
    if done.returncode != expect:
        sys.exit(f"{' '.join(args[:3])}: exit {done.returncode}, expected {expect}\n{done.stderr}")
    print(f"{' '.join(args[:4])}: exit {done.returncode}", file=sys.stderr)


def run_release(code: Path, work: Path, database_url: str, api_url: str) -> None:
    import requests

    from partners.simulator.server import SimulatorProcess
    from tests.crash.conftest import partners_file

    exports = release.write_exports(work / "exports")
    sim = SimulatorProcess(release.SIM_SEED).start()
    try:
        env = dict(os.environ)
        env.update(
            PRAKERJA_DATABASE_URL=database_url,
            PRAKERJA_BATCH_SIZE=str(release.BATCH),
            PREFECT_API_URL=api_url,
            PRAKERJA_SIMULATOR_API_KEY="simulator",
            PRAKERJA_PARTNERS=str(
                partners_file(work / "partners.toml", sim.base_url, release.PARTNER_OVERRIDES)
            ),
        )
        env.pop("PYTHONPATH", None)
        nik, reason = release.BLACKLISTED
        cli(code, env, "blacklist", "add", nik, "--reason", reason)
        cli(code, env, *release.wave_args(1, exports[1]))
        cli(code, env, "wave", "announce", "--wave", "1", "--message", "Hasil gelombang 1")
        requests.post(f"{sim.base_url}/_admin/faults", json=release.ISSUER_DOWN, timeout=5)
        cli(code, env, *release.wave_args(2, exports[2]), expect=3)
    finally:
        sim.stop()


def dump_sqlite(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return "\n".join(con.iterdump()) + "\n"
    finally:
        con.close()


def dump_postgres(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    out = subprocess.run(
        [
            "pg_dump",
            "--no-owner",
            "--no-privileges",
            "--no-comments",
            "--inserts",
            "-h",
            u.host or "127.0.0.1",
            "-p",
            str(u.port or 5432),
            "-U",
            u.username or "postgres",
            u.database or "postgres",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **({"PGPASSWORD": u.password} if u.password else {})},
    ).stdout
    # psql's meta-commands (\restrict ...) and comments are not SQL a driver can send.
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith(("\\", "--"))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL whose program tables may be dropped")
    args = parser.parse_args()

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tests.schema_reset import drop_program_schema

    release.FIXTURES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        work = Path(tmp)
        code = checkout(work)
        api_url = str(PREFECT_API_URL.value())
        db = work / "program.db"
        run_release(code, work / "sqlite", f"sqlite:///{db}", api_url)
        release.SQLITE_DUMP.write_text(dump_sqlite(db), encoding="utf-8")
        print(f"wrote {release.SQLITE_DUMP}", file=sys.stderr)
        if args.postgres:
            drop_program_schema(args.postgres)
            run_release(code, work / "postgres", args.postgres, api_url)
            release.POSTGRES_DUMP.write_text(dump_postgres(args.postgres), encoding="utf-8")
            drop_program_schema(args.postgres)
            print(f"wrote {release.POSTGRES_DUMP}", file=sys.stderr)


if __name__ == "__main__":
    main()
