"""What a newcomer reads after a wave run: the funnel's selected split into the
drawn and the backfilled, readable artifacts, a run name per run, and no raw run-log
warning in the terminal for what a stage line already says."""

from __future__ import annotations

import io
import logging
import re
from types import SimpleNamespace

from rich.console import Console
from sqlalchemy import update

from cli import render
from models.enums import ReasonCode, Stage
from models.tables import Registrant
from tests.tasks.factories import make_wave, person, write_export

FUNNEL = {
    "registered": 100_000,
    "intake_accepted": 73_958,
    "locally_eligible": 70_000,
    "identity_verified": 52_000,
    "eligible": 33_000,
    "selected": 3_858,
    "confirmed": 3_353,
    "credited": 3_343,
}
SPLIT = {"in_draw": 3_353, "backfilled": 505, "quota_raise": 0}


def _report(split: dict[str, int] | None) -> dict:
    return {
        "wave_id": 1,
        "status": "CLOSED",
        "quota": 3_353,
        "funnel": FUNNEL,
        "draw": {"drawn": True, "selected": split},
        "credited_amount": 3_343_000_000,
        "pending": {},
    }


def _funnel_text(report: dict) -> list[str]:
    out = io.StringIO()
    render.funnel(report, Console(file=out, width=120, color_system=None))
    return out.getvalue().splitlines()


def test_the_funnel_shows_how_its_selected_add_up():
    lines = _funnel_text(_report(SPLIT))
    at = next(i for i, ln in enumerate(lines) if ln.startswith("│ selected "))
    assert "3,858" in lines[at]
    assert re.match(r"│   in the draw +│ +3,353 │", lines[at + 1]), lines[at + 1]
    assert re.match(r"│   backfilled into freed seats +│ +505 │", lines[at + 2]), lines[at + 2]
    assert lines[at + 3].startswith("│ confirmed ")
    assert lines[-1].startswith("Credited amount: Rp") and lines[-2].startswith("└")
    # All of them drawn in the draw (or a report without the split): no rows under it.
    for split in ({"in_draw": 3_858, "backfilled": 0, "quota_raise": 0}, None):
        lines = _funnel_text(_report(split))
        at = next(i for i, ln in enumerate(lines) if ln.startswith("│ selected "))
        assert lines[at + 1].startswith("│ confirmed ")


def test_the_funnel_artifact_reads_like_the_terminals_funnel():
    from flows.publish import funnel_table

    rows = funnel_table(FUNNEL, SPLIT)
    assert rows[0] == {
        "step": "registered",
        "count": "100,000",
        "share of registered": "100.0 %",
        "wave 1 of 2020": "5,965,048",
        "2020 share": "100.0 %",
    }
    assert rows[1]["count"] == "73,958" and rows[1]["share of registered"] == "74.0 %"
    locally = next(r for r in rows if r["step"] == "locally eligible")
    assert locally["wave 1 of 2020"] == "" and locally["2020 share"] == ""
    steps = [r["step"] for r in rows]
    at = steps.index("selected")
    assert steps[at + 1 : at + 3] == [
        "selected: in the draw",
        "selected: backfilled into freed seats",
    ]
    assert [r["count"] for r in rows[at : at + 3]] == ["3,858", "3,353", "505"]


def test_a_stage_artifact_has_thousands_separators():
    from flows.publish import stage_markdown

    state = {
        "funnel": FUNNEL,
        "reasons": {"EMAIL_UNVERIFIED": 26_042},
        "pending_by_partner": {},
        "states": {},
    }
    merged = {"counts": {"rows": 100_000, "EMAIL_UNVERIFIED": 26_042}, "failures": []}
    md = stage_markdown(1, Stage.INTAKE, merged, state)
    assert "| registered | 100,000 |" in md and "| passed | 73,958 |" in md
    assert "| rows | 100,000 |" in md and "| EMAIL_UNVERIFIED | 26,042 |" in md


def test_intake_rejections_and_the_selected_by_round_are_counted(sessions, tmp_path):
    from readmodels.reporting import rejected_at_intake, selected_by_round
    from tasks.intake import import_export

    make_wave(sessions)
    rows = [person(1, email_verified="false"), person(2), person(2, registration_id="dup")]
    rows += [person(i) for i in range(3, 9)]
    import_export(sessions, 1, write_export(tmp_path / "w.csv", rows))
    with sessions() as session:
        assert rejected_at_intake(session, 1) == {
            ReasonCode.DUPLICATE_NIK.value: 1,
            ReasonCode.EMAIL_UNVERIFIED.value: 1,
        }
    R = Registrant.__table__  # type: ignore[attr-defined]
    with sessions() as session, session.begin():
        for line, round_no in ((4, 0), (5, 0), (6, 1), (7, 2), (8, -1)):
            session.execute(
                update(R).where(R.c.wave_id == 1, R.c.line == line).values(draw_round=round_no)
            )
    with sessions() as session:
        assert selected_by_round(session, 1) == {"in_draw": 2, "backfilled": 2, "quota_raise": 1}


def test_every_wave_run_has_a_name_of_its_own_that_starts_with_its_wave(monkeypatch):
    from flows import wave

    monkeypatch.setattr(wave, "current_run", SimpleNamespace(parameters={"wave_id": 3}))
    assert re.fullmatch(r"wave-3-\d{8}-\d{6}", wave.wave_run_name())
    assert wave.wave.flow_run_name is wave.wave_run_name


def test_a_warning_the_stage_line_already_says_reaches_the_terminal_only_with_v():
    from runtime.log_masking import SHOWN_BY_STAGE_LINE, StageLineEcho

    def record(**extra) -> logging.LogRecord:
        rec = logging.LogRecord("prefect.flow_runs", logging.WARNING, "", 0, "refused", (), None)
        rec.__dict__.update(extra)
        return rec

    echo = StageLineEcho()
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.WARNING)  # the CLI without -v
        assert not echo.filter(record(**{SHOWN_BY_STAGE_LINE: True}))
        assert echo.filter(record())  # any other warning: shown
        root.setLevel(logging.DEBUG)  # -v
        assert echo.filter(record(**{SHOWN_BY_STAGE_LINE: True}))
    finally:
        root.setLevel(before)
