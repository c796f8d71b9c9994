"""The audit trail against its witnesses outside the database (interfaces.md, `prakerja
audit --verify`): someone who can write to the database cuts the trail's tail, removes a
row or rewrites one and recomputes every later hash; `--verify`, run as operators run it,
names the row from the witness file or from Prefect's events. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from models.config import Settings
from rules.audit import GENESIS, row_hash
from runtime.app import build_app
from tasks import audit
from tests.cli_process import run_cli

NIK = "3171010101900001"
ROWS = 6


def _app(database_url: str, witness: Path | None):
    return build_app(
        Settings(database_url=database_url, audit_witness=str(witness) if witness else None)
    )


def _trail(database_url: str, witness: Path | None, rows: int = ROWS) -> list[str]:
    """`rows` operator actions, each audited as the program audits them; their hashes."""
    app = _app(database_url, witness)
    try:
        for i in range(rows):
            after = {"nik": NIK, "listed": True} if i == 0 else {"quota": 10 + i}
            action = "blacklist.add" if i == 0 else "wave.quota.raised"
            audit.record(app.sessions, audit.Actor("ani", "ops-1"), action, wave_id=1, after=after)
        with app.sessions() as session:
            return [r["hash"] for r in audit.audit_trail(session)]
    finally:
        app.dispose()


def _sql(database_url: str, *statements: str, params: list[dict] | None = None) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            for i, statement in enumerate(statements):
                conn.execute(text(statement), (params or [{}] * len(statements))[i])
    finally:
        engine.dispose()


def _rechain(database_url: str) -> None:
    """What a careful intruder does after changing rows: renumbers them 1, 2, 3... and
    recomputes every hash, so that the chain alone verifies again."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            rows = conn.execute(text("SELECT * FROM audit ORDER BY id")).mappings().all()
            conn.execute(text("DELETE FROM audit"))
            prev = GENESIS
            for new_id, r in enumerate(rows, start=1):
                at = r["at"] if isinstance(r["at"], datetime) else datetime.fromisoformat(r["at"])
                digest = row_hash(
                    id=new_id,
                    at=at,
                    who=r["who"],
                    host=r["host"],
                    action=r["action"],
                    wave_id=r["wave_id"],
                    before=r["before_json"],
                    after=r["after_json"],
                    prev_hash=prev,
                )
                conn.execute(
                    text(
                        "INSERT INTO audit (id, at, who, host, action, wave_id, before_json, "
                        "after_json, prev_hash, hash) VALUES (:id, :at, :who, :host, :action, "
                        ":wave_id, :before_json, :after_json, :prev_hash, :hash)"
                    ),
                    {**r, "id": new_id, "at": at, "prev_hash": prev, "hash": digest},
                )
                prev = digest
    finally:
        engine.dispose()


def cut_tail(url: str) -> None:
    _sql(url, "DELETE FROM audit WHERE id >= 5")


def delete_middle(url: str) -> None:
    _sql(url, "DELETE FROM audit WHERE id = 3")


def delete_middle_and_rechain(url: str) -> None:
    delete_middle(url)
    _rechain(url)


def rewrite_and_rehash(url: str) -> None:
    _sql(url, "UPDATE audit SET after_json = :a WHERE id = 3", params=[{"a": '{"quota":99}'}])
    _rechain(url)


ATTACKS: list[tuple[Callable[[str], None], int, str]] = [
    (cut_tail, 5, "missing"),
    (delete_middle, 3, "missing"),
    (delete_middle_and_rechain, 3, "altered"),
    (rewrite_and_rehash, 3, "altered"),
]


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRAKERJA_", "PREFECT_API"))}
    env.update(PRAKERJA_DATABASE_URL=database_url, **extra)
    return env


# ---------------------------------------------------------------- the witness file
def test_an_untouched_trail_verifies_against_its_witness_file_and_prints_its_head(
    database_url, tmp_path
):
    witness = tmp_path / "audit.witness"
    hashes = _trail(database_url, witness)
    lines = [json.loads(line) for line in witness.read_text().splitlines()]
    assert [(w["id"], w["hash"]) for w in lines] == list(enumerate(hashes, start=1))
    assert NIK not in witness.read_text()  # ids, hashes and actions: no personal data

    out = run_cli(["audit", "--verify"], _env(database_url, PRAKERJA_AUDIT_WITNESS=str(witness)))
    assert out.returncode == 0, out.stderr
    assert f"head: row {ROWS}, hash {hashes[-1]}" in out.stdout
    assert f"witness {witness}: {ROWS} rows witnessed, last row {ROWS}" in out.stdout


@pytest.mark.parametrize(("attack", "row", "why"), ATTACKS, ids=lambda a: getattr(a, "__name__", a))
def test_verify_names_the_row_an_intruder_changed_from_the_witness_file(
    database_url, tmp_path, attack, row, why
):
    witness = tmp_path / "audit.witness"
    _trail(database_url, witness)
    attack(database_url)
    out = run_cli(["audit", "--verify", "--witness", str(witness)], _env(database_url))
    assert out.returncode == 1, out.stdout
    assert f"audit trail broken at row {row}: {why}" in out.stderr


def test_the_chain_alone_misses_a_cut_tail_and_a_rewrite_that_the_witness_catches(
    database_url, tmp_path
):
    """Why a witness: after a rewrite with every later hash recomputed, the chain is
    whole again and only the witness's old hashes tell."""
    witness = tmp_path / "audit.witness"
    _trail(database_url, witness)
    rewrite_and_rehash(database_url)
    alone = run_cli(["audit", "--verify"], _env(database_url))
    assert alone.returncode == 0 and "witness: none" in alone.stdout
    held = run_cli(["audit", "--verify", "--json", "--witness", str(witness)], _env(database_url))
    assert held.returncode == 1
    assert json.loads(held.stdout)["first_broken"]["id"] == 3


def test_rows_after_the_last_witnessed_one_are_allowed_and_a_rolled_back_row_never_witnessed(
    database_url, tmp_path
):
    witness = tmp_path / "audit.witness"
    _trail(database_url, witness)
    # The crash window: the last row committed, the process died before its witness line.
    kept = witness.read_text().splitlines()[:-1]
    witness.write_text("".join(line + "\n" for line in kept))
    # An action that fails after its audit row was appended: the row is rolled back with
    # it, and the witness never hears of it.
    app = _app(database_url, witness)
    try:
        with pytest.raises(RuntimeError), app.sessions() as session, session.begin():
            audit.append(session, audit.Actor("ani", "ops-1"), "wave.announced", wave_id=1)
            raise RuntimeError("the action failed")
        audit.record(app.sessions, audit.Actor("budi", "ops-2"), "wave.run", wave_id=1)
    finally:
        app.dispose()
    ids = [json.loads(line)["id"] for line in witness.read_text().splitlines()]
    assert ids == [*range(1, ROWS), ROWS + 1]
    out = run_cli(["audit", "--verify", "--witness", str(witness)], _env(database_url))
    assert out.returncode == 0, out.stderr
    assert f"head: row {ROWS + 1}" in out.stdout


# ---------------------------------------------------------------- Prefect's events
def _stored_events(trail: str, database: str, count: int):
    """The witness events of this trail once the server has stored all `count`."""
    deadline = time.monotonic() + 60
    while True:
        read = audit.read_prefect_witness(trail, database)
        assert read is not None
        if len(read.rows) >= count:
            return read
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(read.rows)} of {count} witness events stored")
        time.sleep(0.5)


@pytest.fixture
def prefect_trail(prefect_server, database_url):
    """A trail whose appends were witnessed by Prefect's events (no witness file)."""
    from prefect.settings import PREFECT_API_URL

    hashes = _trail(database_url, None)
    app = _app(database_url, None)
    try:
        with app.sessions() as session:
            database = audit.database_identity(session)
    finally:
        app.dispose()
    read = _stored_events(hashes[0], database, ROWS)
    return hashes, read, _env(database_url, PREFECT_API_URL=str(PREFECT_API_URL.value()))


def test_an_untouched_trail_verifies_against_prefects_events(prefect_trail):
    hashes, read, env = prefect_trail
    assert sorted((w.id, w.hash) for w in read.rows) == list(enumerate(hashes, start=1))
    out = run_cli(["audit", "--verify"], env)
    assert out.returncode == 0, out.stderr
    assert f"head: row {ROWS}, hash {hashes[-1]}" in out.stdout
    assert f"{ROWS} rows witnessed, last row {ROWS}" in out.stdout


def test_prefects_witness_events_carry_ids_hashes_and_actions_only(prefect_trail):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(event=EventNameFilter(name=[audit.AUDIT_APPENDED])), limit=50
        )
    assert page.events
    for e in page.events:
        assert e.resource.id == audit.AUDIT_RESOURCE
        assert set(e.payload) == {"id", "hash", "at", "action", "trail", "database"}
        assert NIK not in e.model_dump_json() and "ani" not in json.dumps(e.payload)


@pytest.mark.parametrize(("attack", "row", "why"), ATTACKS, ids=lambda a: getattr(a, "__name__", a))
def test_verify_names_the_row_an_intruder_changed_from_prefects_events(
    prefect_trail, database_url, attack, row, why
):
    _, _, env = prefect_trail
    attack(database_url)
    out = run_cli(["audit", "--verify"], env)
    assert out.returncode == 1, out.stdout
    assert f"audit trail broken at row {row}: {why}" in out.stderr


# ---------------------------------------------------------------- approvals
def _approval(database_url: str, table: str, **values) -> None:
    columns = ", ".join(values)
    _sql(
        database_url,
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + k for k in values)})",
        params=[values],
    )


def _wave_approval(digest: str = "d" * 64) -> dict:
    return {
        "wave_id": 1,
        "approved_by": "sari",
        "approver_key": "sari",
        "host": "ops-2",
        "via": "cli",
        "at": datetime(2026, 12, 1, 9, 0),
        "seats_json": json.dumps({"all": 10}),
        "confirmed": 10,
        "total_amount": 10_000_000,
        "digest": digest,
    }


def test_an_approval_written_by_hand_without_its_audit_row_fails_verify(database_url):
    _trail(database_url, None, rows=2)
    _approval(database_url, "sign_off", **_wave_approval())
    _approval(
        database_url,
        "payout_sign_off",
        as_of=date(2027, 1, 5),
        approved_by="sari",
        approver_key="sari",
        host="ops-2",
        via="cli",
        at=datetime(2027, 1, 5, 9, 0),
        payments=3,
        total_amount=1_800_000,
        digest="e" * 64,
    )
    out = run_cli(["audit", "--verify"], _env(database_url))
    assert out.returncode == 1
    assert "approval sign_off row 1 (wave 1, by sari) has no audit row" in out.stderr
    assert "approval payout_sign_off row 1 (payout run 2027-01-05, by sari)" in out.stderr
    assert "approvals: 2 checked" in out.stdout


def test_an_approval_counts_with_its_own_audit_row_and_not_with_another_digest(database_url):
    app = _app(database_url, None)
    try:
        seen = {"seats": {"all": 10}, "confirmed": 10, "total_amount": 10_000_000}
        audit.record(
            app.sessions,
            audit.Actor("sari", "ops-2"),
            "wave.sign-off",
            wave_id=1,
            after={**seen, "digest": "d" * 64, "via": "cli", "approvals": 1, "required": 1},
        )
    finally:
        app.dispose()
    _approval(database_url, "sign_off", **_wave_approval())
    assert run_cli(["audit", "--verify"], _env(database_url)).returncode == 0
    # The approval's digest changed afterwards (to another list than the one approved).
    _sql(database_url, "UPDATE sign_off SET digest = :d", params=[{"d": "f" * 64}])
    out = run_cli(["audit", "--verify"], _env(database_url))
    assert out.returncode == 1 and "approval sign_off row 1" in out.stderr


# ---------------------------------------------------------------- wave.created
def _refuse_audit_rows(database_url: str) -> None:
    """The database refuses every audit row from now on (a fault after the wave's row)."""
    if database_url.startswith("sqlite"):
        _sql(
            database_url,
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit "
            "BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        )
    else:
        _sql(
            database_url,
            "CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger AS "
            "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit "
            "FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        )


def test_a_wave_is_created_with_its_audit_row_or_not_at_all(sessions, database_url, tmp_path):
    from sqlalchemy.exc import DBAPIError

    from models.tables import Wave
    from runtime import app as runtime
    from services.runs import RunEnd, WaveRun, start_wave_run
    from tests.services.test_runs import Flow, audit_actions
    from tests.tasks.factories import person, write_export

    export = write_export(tmp_path / "w.csv", [person(i) for i in range(3)])
    request = WaveRun(1, registrants=str(export), settings={"quota": 2}, by="rina")
    _refuse_audit_rows(database_url)
    flow = Flow(sessions)
    with pytest.raises(DBAPIError, match="audit refused"):
        start_wave_run(runtime.current(), request, run_flow=flow)
    with sessions() as session:
        assert session.get(Wave, 1) is None  # no wave without its wave.created row
    assert flow.calls == []

    _sql(
        database_url,
        "DROP TRIGGER refuse_audit" + ("" if "sqlite" in database_url else " ON audit"),
    )
    outcome = start_wave_run(runtime.current(), request, run_flow=flow)
    assert (outcome.end, outcome.created) == (RunEnd.DONE, True)
    assert audit_actions(sessions) == ["wave.created", "wave.run"]
