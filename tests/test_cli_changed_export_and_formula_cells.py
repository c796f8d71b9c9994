"""A resumed intake refuses an export changed since the wave started, and `wave export`
never writes a cell a spreadsheet would run as a formula. Through the real `prakerja`."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.tables import Registrant, Wave
from rules.settings import SettingsError, WaveSettings
from tasks.intake import file_sha256, import_export
from tasks.waves import create_or_resume_wave
from tests.cli_process import run_cli
from tests.tasks.factories import person, write_export


def start_wave(sessions, export: Path) -> None:
    """The state a `wave run` leaves when it dies after creating the wave, before intake."""
    settings = WaveSettings(wave_id=1, quota=2, lottery_seed="s", reference_date=date(2026, 11, 28))
    create_or_resume_wave(
        sessions,
        settings,
        source_path=str(export.resolve()),
        source_sha256=file_sha256(export),
        given={"quota"},
    )


def resume(sessions):
    """What `wave run --wave 1` (no --registrants) asks of the wave."""
    settings = WaveSettings(wave_id=1, quota=2, lottery_seed="s", reference_date=date(2026, 11, 28))
    return create_or_resume_wave(
        sessions, settings, source_path=None, source_sha256=None, given=set(), keep_open=True
    )


def snapshot(sessions) -> tuple[dict, int]:
    with sessions() as session:
        wave = session.get(Wave, 1)
        count = session.execute(select(func.count()).select_from(Registrant)).scalar()
        return wave.model_dump(), count


# ---------------------------------------------------------------- resumed intake, same file
def test_a_resumed_intake_refuses_an_export_changed_since_the_wave_started(tmp_path, sessions):
    export = write_export(tmp_path / "wave-1.csv", [person(i) for i in range(1, 4)])
    original = export.read_bytes()
    start_wave(sessions, export)
    before = snapshot(sessions)
    assert before[0]["intake_done"] is False and before[1] == 0
    # The file at the recorded path is replaced by another one (another day's export).
    write_export(export, [person(i, full_name=f"Other Person {i}") for i in range(1, 5)])

    result = run_cli(["wave", "run", "--wave", "1", "--keep-open"])

    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "wave 1" in lines[0] and str(export.resolve()) in lines[0] and "changed" in lines[0]
    printed = result.stderr + result.stdout
    assert "Person" not in printed
    assert not any(person(i)["nik"] in printed for i in range(1, 5))
    assert snapshot(sessions) == before  # nothing read, nothing changed (not even keep_open)

    # Gone altogether: refused the same way (in-process, as the command calls it).
    export.unlink()
    with pytest.raises(SettingsError, match="cannot be read"):
        resume(sessions)
    assert snapshot(sessions) == before

    export.write_bytes(original)  # the original back: the wave resumes
    wave, created = resume(sessions)
    assert not created and wave.wave_id == 1


# ---------------------------------------------------------------- export: no live formulas
FORMULAS = [
    '=HYPERLINK("http://x","y")',
    "+62812",
    "-3+4",
    "@SUM(A1:A9)",
    "\tTAB",
    "\rCR",
]


def test_wave_export_prefixes_every_cell_a_spreadsheet_would_run_with_a_quote(tmp_path, sessions):
    rows = [person(i, registration_id=value) for i, value in enumerate(FORMULAS, 1)]
    rows += [
        person(7, registration_id="plain'id"),  # unchanged: only the six starts are quoted
        person(8, registration_id="mid=dle-+@"),
        person(9, nik="=1+2"),  # rejected, but exported "as given"
        person(10, nik="-12345"),
    ]
    export = tmp_path / "wave-1.csv"
    with open(export, "w", newline="", encoding="utf-8") as fh:  # RFC 4180: "\r" quoted
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    start_wave(sessions, export)
    import_export(sessions, 1)
    out = tmp_path / "outcomes.csv"

    result = run_cli(["wave", "export", "--wave", "1", "--out", str(out)])

    assert result.returncode == 0, result.stderr[-2000:]
    with open(out, newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    by_id = {r["registration_id"]: r for r in written}
    for value in FORMULAS:
        assert "'" + value in by_id, (value, list(by_id))
    assert "plain'id" in by_id and "mid=dle-+@" in by_id
    assert by_id["reg-9"]["nik"] == "'=1+2" and by_id["reg-10"]["nik"] == "'-12345"
    assert by_id["reg-9"]["outcome"] == "REJECTED"
    assert len(written) == len(rows)  # a quoted "\r" does not split a row
    # No cell of the file starts with a character a spreadsheet runs.
    for row in written:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    # No other value changes: lines, outcomes and the plain NIKs are as before.
    assert [int(r["line"]) for r in written] == sorted(int(r["line"]) for r in written)
    assert by_id["plain'id"]["nik"] == rows[6]["nik"]
