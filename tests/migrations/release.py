"""The program database a previous release left behind, as the upgrade tests use it.

`make_fixture.py` writes it with that release's own code (a `git archive` of RELEASE): wave 1
run to the end and closed (and announced), wave 2 left open with every credit pending
(the card issuer was down), one NIK on the revocation list. The dumps are SQL text, one
per backend, restored by `restore_*` into an empty database.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

RELEASE = "25a4873"  # the last commit before the schema came under Alembic
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SQLITE_DUMP = FIXTURES / f"release-{RELEASE}.sqlite.sql"
POSTGRES_DUMP = FIXTURES / f"release-{RELEASE}.postgresql.sql"

SIM_SEED = "mig"  # the simulator's seed: every partner's answers
EXPORT_SEEDS = {1: "mig", 2: "mig-2"}
REGISTRANTS = 200
QUOTA = 30
LOTTERY = {1: "mig-lottery-1", 2: "mig-lottery-2"}
REFERENCE = date(2026, 11, 28)
BATCH = 20
BLACKLISTED = ("3171010190000017", "revoked before the upgrade")
ISSUER_DOWN = {"partners": {"card-issuer": {"down": True}}}
# The issuer's client gives up at once while it is down (the wave then waits: exit 3).
PARTNER_OVERRIDES = {
    "card_issuer": {"retry_attempts": 1, "retry_backoff_s": 0.01, "breaker_threshold": 1}
}


def wave_args(wave_id: int, export: Path) -> list[str]:
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
        LOTTERY[wave_id],
        "--reference-date",
        REFERENCE.isoformat(),
    ]


def write_exports(folder: Path) -> dict[int, Path]:
    from partners.simulator.generate import generate_export

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for wave_id, seed in EXPORT_SEEDS.items():
        out[wave_id] = folder / f"wave-{wave_id}.csv"
        generate_export(out[wave_id], registrants=REGISTRANTS, seed=seed, reference_date=REFERENCE)
    return out


def restore_sqlite(path: Path) -> str:
    """The release's SQLite database, restored into a new file; returns its URL."""
    import sqlite3

    con = sqlite3.connect(path)
    con.executescript(SQLITE_DUMP.read_text(encoding="utf-8"))
    con.close()
    return f"sqlite:///{path}"


def restore_postgres(url: str) -> str:
    """The release's PostgreSQL database, restored into the (emptied) database at `url`."""
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.schema_reset import drop_program_schema

    drop_program_schema(url)
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    # One script of many statements: psycopg sends it as a simple query (no parameters).
    with psycopg.connect(plain, autocommit=False) as conn:
        conn.execute(POSTGRES_DUMP.read_text(encoding="utf-8").encode())
    return url
