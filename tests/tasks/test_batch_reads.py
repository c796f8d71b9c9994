"""A batch reads and writes its own rows through the primary key's id range, never by
walking every row of its state.

The regression of issue 19: migration 0003 widened the state index to (wave_id, state,
reason). Within one state its entries are ordered by reason before id, so a batch's
`state = ? AND id BETWEEN ? AND ?` could no longer narrow it by id, and SQLite walked
every entry of the state for each batch: 0.3-0.5 s per batch at six million rows, each
partner stage quadratic in the wave (identity 214 s, screening 288 s, local eligibility
99 s at 5,965,048 registrants). Every statement a batch sends is EXPLAINed here as it
is sent, on each database: the registrant table must be searched by its primary key.
"""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import event, text

from models.enums import State
from tasks.common import R, rows_in_range
from tasks.eligibility import check_local_eligibility_batch
from tests.tasks.factories import make_wave

ROWS = 3_000  # three states, interleaved: each batch's range holds all three


def _fill(sessions) -> None:
    make_wave(sessions, 1, quota=10)
    states = [State.AWAIT_LOCAL.value, State.AWAIT_IDENTITY.value, State.REJECTED.value]
    with sessions() as session, session.begin():
        session.connection().execute(
            R.insert(),
            [
                {
                    "wave_id": 1,
                    "line": i,
                    "nik": f"{3171010000000000 + i}",
                    "phone": f"+6281200{i:06d}",
                    "state": states[i % 3],
                    "reason": "UNDERAGE" if i % 3 == 2 else None,
                    "birth_date": date(1990, 1, 1),
                    "test_score": 80,
                }
                for i in range(1, ROWS + 1)
            ],
        )
        if session.connection().dialect.name == "postgresql":
            session.connection().exec_driver_sql("ANALYZE registrant")


def _plans(engine, statements: list[tuple[str, object]]) -> list[tuple[str, str]]:
    """Each captured statement on the registrant table, with its plan as text."""
    plans = []
    with engine.connect() as conn:
        for sql, params in statements:
            if "registrant" not in sql or not sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
                continue
            if isinstance(params, list):  # an executemany: its plan is that of one row's
                params = params[0]
            if conn.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
                plan = " | ".join(str(r[-1]) for r in rows)
            else:
                rows = conn.exec_driver_sql(f"EXPLAIN {sql}", params).all()
                plan = " | ".join(str(r[0]) for r in rows)
            plans.append((sql, plan))
            conn.rollback()
    return plans


def _sent_while(engine, action) -> list[tuple[str, object]]:
    sent: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def _by_id_range(plan: str, dialect: str) -> bool:
    if dialect == "sqlite":
        return "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in plan
    return "registrant_pkey" in plan


def test_a_batch_reads_its_rows_by_id_range(app_env):
    app = app_env
    _fill(app.sessions)
    dialect = app.engine.dialect.name

    def read() -> None:
        with app.sessions() as session:
            got = rows_in_range(session, 1, [State.AWAIT_IDENTITY.value], (1000, 1999), [R.c.id])
        assert len(got) == 334  # a third of the range: the state's rows, no other

    plans = _plans(app.engine, _sent_while(app.engine, read))
    assert plans, "the batch's read was not seen"
    for sql, plan in plans:
        assert _by_id_range(plan, dialect), f"{sql!r} is planned as {plan!r}"


def test_local_eligibility_updates_its_batch_by_id_range(app_env):
    app = app_env
    _fill(app.sessions)
    dialect = app.engine.dialect.name
    counts: dict = {}

    def decide() -> None:
        counts.update(check_local_eligibility_batch(app.sessions, 1, (1000, 1999)))

    sent = _sent_while(app.engine, decide)
    assert counts == {"passed": 333}  # the AWAIT_LOCAL rows of the range, all passing
    updates = [(sql, plan) for sql, plan in _plans(app.engine, sent) if "UPDATE" in sql.upper()]
    assert len(updates) == 2  # the rejections (none here), then everyone else passing
    for sql, plan in updates:
        assert _by_id_range(plan, dialect), f"{sql!r} is planned as {plan!r}"
    with app.engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM registrant WHERE state = 'AWAIT_LOCAL' AND id < 1000")
        ).scalar_one()
    assert left == 333  # rows outside the batch are not touched


@pytest.fixture
def app_env(database_url):
    from runtime import app as runtime

    app = runtime.configure(database=database_url)
    yield app
    runtime.reset()


def test_a_backfill_round_reads_the_head_of_the_waitlist_from_its_index(app_env):
    """A round reads the waitlist's head from ix_registrant_waitlist (2.6-4.2 s per round
    at six million when it sorted the whole waitlist); the draw and the close, which
    rebuild that index on SQLite, leave it in place."""
    import random

    from sqlalchemy import inspect, update

    from rules.draw import draw_key
    from tasks.draw import draw_participants, fill_free_seats
    from tasks.waves import close_wave_if_done

    app = app_env
    dialect = app.engine.dialect.name
    make_wave(app.sessions, 1, quota=50, lottery_seed="s", household_cap=0)
    rng = random.Random(3)
    niks = [f"{3171010000000000 + rng.randrange(10**9)}" for _ in range(600)]
    with app.sessions() as session, session.begin():
        session.connection().execute(
            R.insert(),
            [
                {
                    "wave_id": 1,
                    "line": i,
                    "nik": nik,
                    "kk_number": f"kk{i}",
                    "province": "31",
                    "priority": i % 7 == 0,
                    "phone": "+6281200000000",
                    "state": State.ELIGIBLE.value,
                    "draw_key": draw_key("s", nik),
                }
                for i, nik in enumerate(dict.fromkeys(niks), 1)
            ],
        )
    draw_participants(app.sessions, 1)

    def index_names() -> set[str]:
        return {i["name"] for i in inspect(app.engine).get_indexes("registrant")}

    assert "ix_registrant_waitlist" in index_names()
    with app.sessions() as session, session.begin():  # 10 failed accounts free 10 seats
        selected = (
            session.execute(R.select().with_only_columns(R.c.id).where(R.c.state == "SELECTED"))
            .scalars()
            .all()
        )
        session.execute(
            update(R)
            .where(R.c.id.in_(selected[:10]))
            .values(state="REJECTED", reason="ACCOUNT_NOT_FOUND")
        )
        session.execute(update(R).where(R.c.id.in_(selected[10:])).values(state="CONFIRMED"))
    round_sent = _sent_while(app.engine, lambda: fill_free_seats(app.sessions, 1))
    heads = [
        (sql, plan)
        for sql, plan in _plans(app.engine, round_sent)
        if "ORDER BY registrant.draw_key" in sql
    ]
    assert heads, "the round read no page of the waitlist"
    if dialect == "sqlite":  # (PostgreSQL chooses by its statistics; 600 rows is a scan)
        for sql, plan in heads:
            assert "USING INDEX ix_registrant_waitlist" in plan, f"{sql!r}: {plan!r}"
            assert "TEMP B-TREE" not in plan, f"{sql!r} sorts: {plan!r}"
        # The round's counts of the drawn (free seats, seats per family card) read the
        # partial index of the drawn alone, never a table row per seat (1.4 s and 1.1 s a
        # call at six million, several calls a round; migration 0005).
        counts = [
            (sql, plan)
            for sql, plan in _plans(app.engine, round_sent)
            if "GROUP BY registrant.province" in sql or "GROUP BY registrant.kk_number" in sql
        ]
        assert len({sql for sql, _ in counts}) >= 2, counts
        for sql, plan in counts:
            if "wave_id < " in sql:  # earlier waves' participants: none in a first wave
                continue
            assert "COVERING INDEX ix_registrant_drawn" in plan, f"{sql!r}: {plan!r}"
    with app.sessions() as session, session.begin():
        session.execute(
            update(R).where(R.c.state.in_(["SELECTED", "CONFIRMED"])).values(state="CREDITED")
        )
    assert close_wave_if_done(app.sessions, 1, keep_open=False)["closed"]
    assert "ix_registrant_waitlist" in index_names()
