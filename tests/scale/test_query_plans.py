"""No statement over a whole wave compares every pair of rows, on PostgreSQL, whatever
its statistics say.

A wave of 6 million stopped finishing on PostgreSQL: the re-check of the waitlisted
against other waves' participants before a backfill round was planned on statistics
gathered before the draw (no drawn registrant yet), as a nested loop of 1.7 million
waitlisted rows over 232,000 drawn ones with the NIK compared in a join filter: 15
minutes for a one-second statement. Here a PostgreSQL table of that shape (a wave drawn
from a large eligible pool, another wave's participants, some sharing NIKs) is analyzed
*before* the draw, as then; every statement the draw, the backfill round, the close, the
reports and the dashboard's index send is EXPLAINed on its own connection, in its own
transaction, as it is sent; a nested loop whose join condition is a filter over the
registrant table (every pair compared) fails the test, naming the statement.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import event, text

from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="query plans are PostgreSQL's")

ELIGIBLE = 150_000  # the pool of wave 2 (the one drawn here)
# Participants of wave 1, all registered again in wave 2: so few that the statistics,
# sampled before the draw, see no drawn registrant at all (as in a program's first wave).
OTHER_WAVE = 5
QUOTA = 10_000


def _pairwise_joins(plan: dict, found: list[str]) -> list[str]:
    """Nested loops whose join condition is evaluated as a filter against a scan of the
    registrant table: each outer row compared with every inner row."""
    node_type = plan.get("Node Type", "")
    children = plan.get("Plans", [])
    if node_type == "Nested Loop" and "Join Filter" in plan and len(children) == 2:
        inner = children[1]
        scanned = json.dumps(inner)
        if '"Relation Name": "registrant"' in scanned:
            found.append(f"{plan.get('Join Type', '')} nested loop, filter {plan['Join Filter']}")
    for child in children:
        _pairwise_joins(child, found)
    return found


@pytest.fixture
def pg_sessions():
    from runtime import app as runtime
    from tests.schema_reset import drop_program_schema

    drop_program_schema(POSTGRES_URL)
    app = runtime.configure(database=POSTGRES_URL)
    yield app
    runtime.reset()


def _fill(app) -> None:
    """Wave 1: OTHER_WAVE participants (confirmed or credited, drawn). Wave 2: ELIGIBLE
    eligible registrants with their draw keys, wave 1's NIKs among them, and as many
    rejected; then ANALYZE, before wave 2's draw."""
    from tests.tasks.factories import make_wave

    make_wave(app.sessions, 1, quota=OTHER_WAVE)
    make_wave(app.sessions, 2, quota=QUOTA)
    with app.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO registrant (wave_id, line, nik, phone, state, draw_round, "
                "draw_key, card_number, province, priority, registered_at) "
                "SELECT 1, g, lpad(g::text, 16, '3'), '+62812' || g, "
                "CASE WHEN g % 2 = 0 THEN 'CREDITED' ELSE 'CONFIRMED' END, 0, "
                "md5(g::text), 'c1-' || g, '31', false, now() "
                "FROM generate_series(1, :n) g"
            ),
            {"n": OTHER_WAVE},
        )
        conn.execute(
            text(
                "INSERT INTO registrant (wave_id, line, nik, phone, state, reason, draw_key, "
                "province, priority, registered_at) "
                "SELECT 2, g, CASE WHEN g % 10 = 0 THEN lpad((g / 10)::text, 16, '3') "
                "ELSE lpad(g::text, 16, '7') END, '+62813' || g, "
                "CASE WHEN g <= :eligible THEN 'ELIGIBLE' ELSE 'REJECTED' END, "
                "CASE WHEN g <= :eligible THEN NULL ELSE 'NIK_NOT_FOUND' END, "
                "md5('w2' || g::text), '31', false, now() "
                "FROM generate_series(1, :total) g"
            ),
            {"eligible": ELIGIBLE, "total": 2 * ELIGIBLE},
        )
        conn.execute(text("UPDATE wave SET intake_done = true WHERE wave_id IN (1, 2)"))
        conn.exec_driver_sql("ANALYZE registrant")  # statistics from before the draw


def test_no_statement_over_a_wave_compares_every_pair(pg_sessions):
    from readmodels.reporting import (
        rejected_at_intake,
        selected_by_round,
        stage_state,
        wave_report,
        work_left,
    )
    from tasks import draw
    from tasks.portal_index import build_portal_index
    from tasks.waves import close_wave_if_done

    app = pg_sessions
    _fill(app)
    plans: list[tuple[str, list[str]]] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        head = statement.lstrip().split(None, 1)[0].upper()
        if executemany or head not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
            return
        if "registrant" not in statement:
            return
        # The statement's own connection and transaction (its SET LOCALs apply), on a
        # client cursor of its own (the statement's may be a server-side one).
        own = conn.connection.cursor()
        try:
            own.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            plan = own.fetchone()[0][0]["Plan"]
        finally:
            own.close()
        plans.append((" ".join(statement.split()), _pairwise_joins(plan, [])))

    @event.listens_for(app.engine, "connect")
    def _bounded(dbapi_conn, _record):  # a pairwise plan run for real fails, never hangs
        with dbapi_conn.cursor() as cur:
            cur.execute("SET statement_timeout = '120s'")

    app.engine.dispose()  # new connections, bounded
    event.listen(app.engine, "before_cursor_execute", explain)
    try:
        drawn = draw.draw_participants(app.sessions, 2)
        assert drawn.get("selected") or drawn.get("drawn") or drawn
        # The seats of those found participants elsewhere, and a tenth more, free up:
        # the waitlist's re-check and a backfill round, on the statistics from before.
        with app.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE registrant SET state = 'REJECTED', reason = 'ACCOUNT_NOT_FOUND' "
                    "WHERE wave_id = 2 AND state = 'SELECTED' AND line % 10 = 1"
                )
            )
            conn.execute(
                text(
                    "UPDATE registrant SET state = 'CONFIRMED', card_number = 'c2-' || id "
                    "WHERE wave_id = 2 AND state = 'SELECTED'"
                )
            )
        draw.fill_free_seats(app.sessions, 2)
        with app.sessions() as session:
            wave_report(session, 2)
            stage_state(session, 2)
            rejected_at_intake(session, 2)
            selected_by_round(session, 2)
            work_left(session, 2)
        build_portal_index(app.sessions, 2)
        close_wave_if_done(app.sessions, 2, keep_open=False)
    finally:
        event.remove(app.engine, "before_cursor_execute", explain)

    assert len(plans) > 10, "the statements were not seen"
    # The re-checks against other waves' participants were among them.
    assert any(s.startswith("UPDATE registrant") and "EXISTS" in s for s, _ in plans)
    pairwise = [f"{statement[:300]}: {found}" for statement, found in plans if found]
    assert pairwise == []
