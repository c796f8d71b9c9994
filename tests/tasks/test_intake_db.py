"""Intake into the database: every row one record, duplicates and email settled, idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models.tables import Registrant
from tasks.intake import import_export
from tests.tasks.factories import make_wave, person, write_export


@pytest.fixture(autouse=True, params=["parsed-here", "parsed-in-a-process"])
def parser(request, monkeypatch):
    """Every test twice: the export parsed in this process, and in a process of its own
    (as big exports are)."""
    from tasks import intake

    if request.param == "parsed-in-a-process":
        monkeypatch.setattr(intake, "PARSE_PROCESS_FROM_BYTES", 0)
    return request.param


def _outcomes(sessions) -> dict[int, tuple[str, str | None]]:
    with sessions() as session:
        rows = session.execute(select(Registrant.line, Registrant.state, Registrant.reason))
        return {line: (state, reason) for line, state, reason in rows}


def test_duplicate_nik_keeps_earliest_registration_even_across_offsets(sessions, tmp_path):
    make_wave(sessions)
    first = person(1, registered_at="2026-11-25T10:00:00+08:00")  # 09:00 in Jakarta
    later = person(1, registration_id="reg-1b", registered_at="2026-11-25T09:30:00+07:00")
    same_instant = person(2, registered_at="2026-11-25T09:00:00+07:00")
    same_instant_later_line = person(
        2, registration_id="reg-2b", registered_at="2026-11-25T11:00:00+09:00"
    )
    export = write_export(tmp_path / "w.csv", [later, first, same_instant, same_instant_later_line])
    import_export(sessions, 1, export)
    got = _outcomes(sessions)
    assert got[2] == ("REJECTED", "DUPLICATE_NIK")  # line 2 registered later than line 3
    assert got[3] == ("AWAIT_LOCAL", None)
    assert got[4] == ("AWAIT_LOCAL", None)
    assert got[5] == ("REJECTED", "DUPLICATE_NIK")  # same instant, later line


def test_unverified_email_loses_to_nothing_but_still_wins_the_duplicate(sessions, tmp_path):
    make_wave(sessions)
    unverified_first = person(1, email_verified="false", registered_at="2026-11-25T08:00:00+07:00")
    verified_later = person(1, registration_id="r-late")
    export = write_export(tmp_path / "w.csv", [unverified_first, verified_later])
    import_export(sessions, 1, export)
    assert _outcomes(sessions) == {
        2: ("REJECTED", "EMAIL_UNVERIFIED"),
        3: ("REJECTED", "DUPLICATE_NIK"),
    }


def test_importing_the_same_file_twice_changes_nothing(sessions, tmp_path):
    make_wave(sessions)
    rows = [person(i) for i in range(1, 8)] + [person(9, nik="123")]
    export = write_export(tmp_path / "w.csv", rows)
    first = import_export(sessions, 1, export)
    before = _outcomes(sessions)
    second = import_export(sessions, 1, export)
    assert first.rows == 8 and first.inserted == 8
    assert second.inserted == 0
    assert _outcomes(sessions) == before
    assert before[9] == ("REJECTED", "MISSING_FIELD")


def test_an_interrupted_intake_resumes_without_duplicating_rows(sessions, tmp_path):
    from sqlalchemy import delete

    from models.tables import Wave

    make_wave(sessions)
    export = write_export(tmp_path / "w.csv", [person(i) for i in range(1, 21)])
    import_export(sessions, 1, export)
    # Simulate a crash after the first 10 rows were committed and before the end.
    with sessions() as session, session.begin():
        session.execute(delete(Registrant).where(Registrant.line > 11))
        wave = session.get(Wave, 1)
        wave.intake_done = False
        session.add(wave)
    result = import_export(sessions, 1, export)
    assert result.skipped_already_loaded == 10
    got = _outcomes(sessions)
    assert sorted(got) == list(range(2, 22))


def test_postgresql_knows_the_loaded_wave_before_searching_it_for_duplicates(sessions, tmp_path):
    # Without statistics on the rows COPY just loaded, PostgreSQL planned the duplicate
    # search as if the wave had one row and ran it once per registrant (a 100,000-row
    # intake did not finish in ten minutes): intake analyzes the table first.
    from sqlalchemy import text

    make_wave(sessions)
    export = write_export(tmp_path / "w.csv", [person(i) for i in range(1, 40)])
    import_export(sessions, 1, export)
    with sessions() as session:
        if session.connection().dialect.name != "postgresql":
            pytest.skip("statistics are PostgreSQL's concern here")
        analyzed, rows = session.execute(
            text(
                "SELECT last_analyze IS NOT NULL, n_live_tup FROM pg_stat_user_tables"
                " WHERE relname = 'registrant'"
            )
        ).one()
    assert analyzed and rows == 39
