"""The audit trail on a real database: concurrent writers never fork the chain."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tasks import audit


def test_concurrent_appends_make_one_unbroken_chain(sessions):
    def write(i: int) -> int:
        actor = audit.Actor(f"op-{i % 4}", "host-a")
        return audit.record(sessions, actor, "wave.run", wave_id=1, after={"i": i}, attempts=20)

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(write, range(40)))
    assert sorted(ids) == list(range(1, 41))
    with sessions() as session:
        assert audit.verify(session) == (40, None)
        rows = audit.audit_trail(session, 1)
    assert sorted(r["after"]["i"] for r in rows) == list(range(40))


def test_an_edit_in_the_database_is_named_by_verify(sessions):
    from sqlalchemy import text

    for i in range(3):
        audit.record(sessions, audit.Actor("ani", "h"), "wave.announced", wave_id=2, after={"i": i})
    with sessions() as session, session.begin():
        session.execute(text("UPDATE audit SET who = 'budi' WHERE id = 2"))
    with sessions() as session:
        checked, broken = audit.verify(session)
    assert broken is not None and broken.id == 2
