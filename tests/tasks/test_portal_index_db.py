"""The dashboard's index of a wave's NIKs: the row that counts for each valid NIK, built
once after intake; and announcement (portal.md), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from models.tables import PortalPerson, Registrant, Wave
from tasks.intake import import_export
from tasks.portal_index import AnnounceError, announce_wave, build_portal_index
from tests.tasks.factories import make_wave, person, write_export


def _indexed_lines(sessions, wave_id: int = 1) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(
            select(PortalPerson.nik, Registrant.line)
            .join(Registrant, Registrant.id == PortalPerson.registrant_id)
            .where(PortalPerson.wave_id == wave_id)
        )
        return {nik: line for nik, line in rows}


def test_each_valid_nik_points_at_the_row_that_counts(sessions, tmp_path):
    make_wave(sessions)
    a = person(1)
    a_dup = person(1, registration_id="reg-1b", registered_at="2026-11-25T23:00:00+07:00")
    b_missing = person(2, payout_account="")  # MISSING_FIELD, valid NIK
    b_ok = person(2, registration_id="reg-2b")
    c_missing_only = person(3, email="")  # MISSING_FIELD, valid NIK, nothing else
    d_missing_bad_nik = person(4, nik="9900000000000000", email="")
    e_invalid = person(5, nik="3100000000000000")
    f_unverified = person(6, email_verified="false", registered_at="2026-11-25T08:00:00+07:00")
    f_dup = person(6, registration_id="reg-6b", registered_at="2026-11-25T12:00:00+07:00")
    export = write_export(
        tmp_path / "w.csv",
        [a, a_dup, b_missing, b_ok, c_missing_only, d_missing_bad_nik, e_invalid, f_unverified,
         f_dup],
    )  # fmt: skip
    import_export(sessions, 1, export)
    result = build_portal_index(sessions, 1)
    lines = _indexed_lines(sessions)
    assert lines == {
        a["nik"]: 2,  # accepted; its later duplicate does not count
        b_ok["nik"]: 5,  # the earliest accepted row, though a rejected row came first
        c_missing_only["nik"]: 6,  # none accepted: the first row with the NIK
        f_unverified["nik"]: 9,  # none accepted (unverified, then a duplicate): the first
    }
    assert result == {"indexed": 4, "already": False}
    with sessions() as session:
        phones = dict(session.execute(select(Registrant.line, Registrant.phone)).all())
    # A row rejected by checks 2-4 keeps the phone as given: its code can reach them.
    assert phones[6] == c_missing_only["phone"] and phones[8] == e_invalid["phone"]
    # Built once: a second call changes nothing and says so.
    assert build_portal_index(sessions, 1) == {"indexed": 0, "already": True}
    assert _indexed_lines(sessions) == lines


def test_the_index_waits_for_intake_to_finish(sessions):
    make_wave(sessions)
    with pytest.raises(ValueError, match="intake"):
        build_portal_index(sessions, 1)


def test_announcement_needs_the_draw_keeps_its_first_time_and_replaces_the_message(
    sessions, tmp_path
):
    make_wave(sessions)
    import_export(sessions, 1, write_export(tmp_path / "w.csv", [person(1), person(2)]))
    with pytest.raises(AnnounceError, match="draw"):
        announce_wave(sessions, 1, None)
    with pytest.raises(AnnounceError, match="does not exist"):
        announce_wave(sessions, 7, None)
    with sessions() as session, session.begin():
        wave = session.get(Wave, 1)
        wave.drawn_at = datetime(2026, 11, 28, 12, 0)
    with pytest.raises(AnnounceError, match="1,000|1000"):
        announce_wave(sessions, 1, "x" * 1001)
    first = announce_wave(sessions, 1, "hello", now=datetime(2026, 11, 28, 13, 0))
    again = announce_wave(sessions, 1, "second", now=datetime(2026, 11, 29, 1, 0))
    assert first["first_announcement"] and not again["first_announcement"]
    with sessions() as session:
        wave = session.get(Wave, 1)
        assert wave.announced_at == datetime(2026, 11, 28, 13, 0)
        assert wave.announce_message == "second"
    assert set(_indexed_lines(sessions)) == {person(1)["nik"], person(2)["nik"]}
