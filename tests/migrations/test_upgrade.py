"""A program database outlives releases (issue 12, s.3): the one the release before
migrations wrote, with a closed and an open wave, is refused until `prakerja db upgrade`,
then upgraded on SQLite and PostgreSQL without losing a row, to exactly the models'
schema; the open wave then finishes with the outcomes and money of a fresh run.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from models.db import init_db, make_engine
from models.schema import code_heads, database_heads, include_object
from tests.cli_process import run_cli
from tests.conftest import DATABASES, POSTGRES_URL
from tests.crash.conftest import partners_file
from tests.migrations import release

TABLES = (
    "wave",
    "registrant",
    "ledger",
    "message",
    "blacklist",
    "portal_person",
    "portal_session",
    "login_guard",
)


# ------------------------------------------------------------------ helpers
def restore(kind: str, folder: Path) -> str:
    if kind == "sqlite":
        return release.restore_sqlite(folder / "release.db")
    return release.restore_postgres(POSTGRES_URL)


def schema_diffs(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": include_object, "compare_type": True}
            )
            return compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()


def query(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql)).all()]
    finally:
        engine.dispose()


def row_counts(url: str) -> dict[str, int]:
    return {t: query(url, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def heads(url: str) -> tuple[str, ...]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return database_heads(conn)
    finally:
        engine.dispose()


def outcomes(url: str) -> dict[tuple[int, int], tuple[str, str | None]]:
    """Each registrant's state and reason, by (wave, line of its export)."""
    rows = query(url, "SELECT wave_id, line, state, reason FROM registrant")
    return {(w, line): (state, reason) for w, line, state, reason in rows}


def money(url: str) -> dict[str, list[tuple]]:
    return {
        "ledger": sorted(
            query(
                url,
                "SELECT wave_id, status, count(*), sum(amount) FROM ledger "
                "GROUP BY wave_id, status",
            )
        ),
        "credited": sorted(
            query(
                url,
                "SELECT wave_id, count(*) FROM registrant WHERE state = 'CREDITED' "
                "GROUP BY wave_id",
            )
        ),
        "messages": sorted(
            query(url, "SELECT wave_id, status, count(*) FROM message GROUP BY wave_id, status")
        ),
        "waves": sorted(query(url, "SELECT wave_id, status, quota FROM wave")),
    }


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[int, Path]:
    return release.write_exports(tmp_path_factory.mktemp("migration-exports"))


@pytest.fixture(scope="module")
def simulator():
    from partners.simulator.server import SimulatorProcess

    sim = SimulatorProcess(release.SIM_SEED).start()
    yield sim
    sim.stop()


def program_env(prefect_server, folder: Path, sim_url: str, database_url: str) -> dict:
    import os

    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        PRAKERJA_DATABASE_URL=database_url,
        PRAKERJA_BATCH_SIZE=str(release.BATCH),
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PRAKERJA_SIMULATOR_API_KEY="simulator",
        PRAKERJA_PARTNERS=str(
            partners_file(folder / "partners.toml", sim_url, release.PARTNER_OVERRIDES)
        ),
    )
    return env


@pytest.fixture(scope="module")
def fresh_run(prefect_server, simulator, exports, tmp_path_factory) -> str:
    """Both waves run by this code on a new database, from the same exports and seeds."""
    folder = tmp_path_factory.mktemp("fresh-run")
    url = f"sqlite:///{folder / 'fresh.db'}"
    env = program_env(prefect_server, folder, simulator.base_url, url)
    for wave_id in (1, 2):
        done = run_cli(release.wave_args(wave_id, exports[wave_id]), env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return url


# ------------------------------------------------------------------ new databases
@pytest.mark.parametrize("kind", DATABASES)
def test_a_new_database_is_made_at_the_codes_revision_by_its_first_users_at_once(kind, tmp_path):
    from tests.schema_reset import drop_program_schema

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'new.db'}"
    else:
        url = POSTGRES_URL
        drop_program_schema(url)
    engine = make_engine(url)
    errors: list[BaseException] = []

    def open_database() -> None:
        try:
            init_db(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_database) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    engine.dispose()
    assert not errors, errors
    assert heads(url) == code_heads()
    assert schema_diffs(url) == []


# ------------------------------------------------------------------ the release before
@pytest.mark.parametrize("kind", DATABASES)
def test_the_release_befores_database_is_refused_then_upgraded_to_exactly_the_models(
    kind, tmp_path, exports
):
    url = restore(kind, tmp_path)
    before = row_counts(url)
    assert before["wave"] == 2 and before["registrant"] == 2 * release.REGISTRANTS
    assert before["ledger"] > 0 and before["blacklist"] == 1
    # The same exports as the release's runs (the waves keep their files' SHA-256).
    recorded = dict(query(url, "SELECT wave_id, source_sha256 FROM wave"))
    for wave_id, path in exports.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[wave_id]

    env = {"PRAKERJA_DATABASE_URL": url}
    for args in (
        ["wave", "report", "--wave", "1"],
        ["explain", "--wave", "1", "--nik", release.BLACKLISTED[0]],
    ):
        refused = run_cli(args, _env(env))
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "`prakerja db upgrade`" in lines[0], refused.stderr
    assert heads(url) == ()  # refusing changed nothing

    up = run_cli(["db", "upgrade"], _env(env))
    assert up.returncode == 0, up.stderr
    assert f"none (made before schema revisions) to {code_heads()[0]}" in up.stdout
    assert heads(url) == code_heads()
    assert row_counts(url) == before
    assert schema_diffs(url) == []

    again = run_cli(["db", "upgrade"], _env(env))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    report = run_cli(["wave", "report", "--wave", "1", "--json"], _env(env))
    assert report.returncode == 0, report.stderr


@pytest.mark.parametrize("kind", DATABASES)
def test_a_database_from_before_the_draw_index_change_is_upgraded_to_exactly_the_models(
    kind, tmp_path
):
    """create_all never changed an index it had made: a database from before the draw
    order stopped being indexed (67f9fc7) or before paid-once (a9c4633) still carried
    those indexes, and one from before the dashboard lacked its columns."""
    url = restore(kind, tmp_path)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE INDEX ix_registrant_draw ON registrant "
            "(wave_id, state, priority DESC, draw_key) WHERE draw_key IS NOT NULL"
        )
        conn.exec_driver_sql("CREATE INDEX ix_registrant_wave_nik ON registrant (wave_id, nik)")
        conn.exec_driver_sql("DROP INDEX uq_ledger_live_credit")
        conn.exec_driver_sql("ALTER TABLE wave DROP COLUMN announce_message")
        conn.exec_driver_sql("ALTER TABLE wave DROP COLUMN announced_at")
    engine.dispose()
    assert schema_diffs(url) != []
    before = row_counts(url)

    up = run_cli(["db", "upgrade"], _env({"PRAKERJA_DATABASE_URL": url}))
    assert up.returncode == 0, up.stderr
    assert schema_diffs(url) == []
    assert row_counts(url) == before
    engine = create_engine(url)
    registrant_indexes = {i["name"] for i in inspect(engine).get_indexes("registrant")}
    engine.dispose()
    assert not {"ix_registrant_draw", "ix_registrant_wave_nik"} & registrant_indexes


def test_a_database_upgraded_by_a_newer_release_is_refused(tmp_path):
    url = release.restore_sqlite(tmp_path / "release.db")
    env = _env({"PRAKERJA_DATABASE_URL": url})
    assert run_cli(["db", "upgrade"], env).returncode == 0
    query_url = create_engine(url)
    with query_url.begin() as conn:
        conn.exec_driver_sql("UPDATE prakerja_schema_version SET version_num = 'f00dcafe1234'")
    query_url.dispose()
    for args in (["wave", "report", "--wave", "1"], ["db", "upgrade"]):
        refused = run_cli(args, env)
        assert refused.returncode == 2, refused.stderr
        assert "f00dcafe1234, which this release does not know" in refused.stderr
    assert heads(url) == ("f00dcafe1234",)


def test_a_database_at_an_earlier_revision_is_refused_naming_the_upgrade(tmp_path, monkeypatch):
    from models import schema

    engine = make_engine(f"sqlite:///{tmp_path / 'program.db'}")
    init_db(engine)
    (head,) = schema.code_heads()
    # This code one revision on (as after the next migration is added).
    monkeypatch.setattr(schema, "code_heads", lambda: ("9999_next",))
    with pytest.raises(schema.SchemaOutdatedError) as refused:
        init_db(engine)
    engine.dispose()
    assert str(refused.value) == (
        f"the program database is at schema revision {head}, older than this "
        "release's 9999_next: run `prakerja db upgrade` (back it up first)"
    )


LATER_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9999_later"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    # A change SQLite cannot ALTER: the wave table (the registrants' foreign keys point at
    # it) is copied, dropped and renamed on SQLite, altered in place on PostgreSQL.
    with op.batch_alter_table("wave") as batch:
        batch.add_column(sa.Column("approvals_required", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.alter_column("allocation", existing_type=sa.String(), type_=sa.String(32))


def downgrade():
    pass
"""


@pytest.mark.parametrize("kind", DATABASES)
def test_a_later_migration_that_rebuilds_a_referenced_table_keeps_every_row(
    kind, tmp_path, monkeypatch
):
    """How the next schema change will come (a revision after the baseline): on the
    release's database, a table others refer to is rebuilt without losing a row or a
    reference, in the upgrade's one transaction."""
    import shutil

    from models import schema

    migrations = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (head,) = schema.code_heads()
    (migrations / "versions" / "9999_later.py").write_text(LATER_REVISION.replace("{head}", head))
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    schema.code_heads.cache_clear()
    try:
        url = restore(kind, tmp_path)
        before = row_counts(url)
        engine = make_engine(url)
        done = schema.upgrade_database(engine)
        engine.dispose()
        assert (done.before, done.after) == ((), ("9999_later",))
        assert row_counts(url) == before
        assert query(url, "SELECT DISTINCT approvals_required FROM wave") == [(0,)]
        joined = query(url, "SELECT count(*) FROM registrant r JOIN wave w USING (wave_id)")
        assert joined == [(before["registrant"],)]
        engine = create_engine(url)
        assert [fk["referred_table"] for fk in inspect(engine).get_foreign_keys("registrant")] == [
            "wave"
        ]
        engine.dispose()
    finally:
        schema.code_heads.cache_clear()


# ------------------------------------------------------------------ the open wave
@pytest.mark.parametrize("kind", DATABASES)
def test_the_open_wave_finishes_after_the_upgrade_with_a_fresh_runs_outcomes_and_money(
    kind, tmp_path, prefect_server, simulator, fresh_run
):
    url = restore(kind, tmp_path)
    assert dict(query(url, "SELECT wave_id, status FROM wave")) == {1: "CLOSED", 2: "OPEN"}
    pending = query(url, "SELECT count(*) FROM ledger WHERE wave_id = 2 AND status = 'PENDING'")
    assert pending[0][0] > 0  # the issuer was down: every credit of wave 2 waits
    env = program_env(prefect_server, tmp_path, simulator.base_url, url)
    assert run_cli(["db", "upgrade"], env).returncode == 0

    done = run_cli(["wave", "run", "--wave", "2"], env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    got, want = outcomes(url), outcomes(fresh_run)
    assert len(got) == 2 * release.REGISTRANTS
    assert {k: v for k, v in got.items() if v != want.get(k)} == {}
    assert money(url) == money(fresh_run)
    credited = dict(money(url)["credited"])
    assert credited[2] == release.QUOTA  # wave 2 was paid in full after the upgrade


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(extra)
    return env


def test_db_upgrade_of_a_database_that_cannot_be_reached_is_one_line_without_its_password():
    url = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x"
    done = run_cli(["db", "upgrade"], _env({"PRAKERJA_DATABASE_URL": url}))
    assert done.returncode == 1
    assert done.stderr == (
        "error: the program database (PRAKERJA_DATABASE_URL=postgresql+psycopg://"
        "postgres:***@127.0.0.1:1/x) cannot be opened: Connection refused\n"
    )
