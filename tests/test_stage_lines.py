"""The stage lines `wave run` draws from the flow's progress reports (runtime/progress.py):
live on a terminal, one plain line per stage elsewhere; counts only."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from cli.stage_lines import StageLines
from runtime import progress


def _identity_stage(wave_id: int = 1) -> None:
    progress.stage_started(wave_id, "identity")
    progress.batches_planned(wave_id, "identity", 3)
    for verified in (900, 950):
        report = {"stage": "identity", "counts": {"verified": verified, "NIK_NOT_FOUND": 100}}
        progress.batch_done(wave_id, "identity", report)
    progress.batch_done(wave_id, "identity", None)  # a failed batch: no counts
    summary = {"counts": {"verified": 2250, "NIK_NOT_FOUND": 300}}
    progress.stage_finished(wave_id, "identity", summary, 2.5)


def test_plain_lines_one_per_stage_with_batches_records_rate_and_counts(capsys):
    with StageLines(1, live=False):
        progress.stage_started(1, "intake")
        progress.stage_finished(1, "intake", {"counts": {"rows": 5000, "inserted": 5000}}, 2.0)
        _identity_stage()
        progress.stage_started(2, "draw")  # another wave's run in this process: not ours
        progress.stage_finished(2, "draw", {"counts": {"pool_size": 9}}, 1.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "wave 1 intake: 5,000 records in 2.0 s (2,500/s); 5,000 rows: 5,000 in, none rejected",
        "wave 1 identity: 3/3 batches, 2,050 records in 2.5 s (820/s); "
        "verified 2,250, NIK_NOT_FOUND 300",
    ]


def test_batches_of_a_stage_run_inside_another_count_toward_the_wave_stage(capsys):
    """The rollout's refill runs accounts again: its batches belong to the rollout line."""
    with StageLines(1, live=False) as view:
        progress.stage_started(1, "rollout")
        progress.batches_planned(1, "rollout", 1)
        progress.batch_done(1, "rollout", {"counts": {"credited": 10}})
        progress.batches_planned(1, "accounts", 1)
        progress.batch_done(1, "accounts", {"counts": {"confirmed": 1}})
        progress.stage_finished(1, "rollout", {"counts": {"credited": 11}}, 1.0)
    assert list(view.lines) == ["rollout"]
    assert view.lines["rollout"].planned == 2 and view.lines["rollout"].records == 11
    assert capsys.readouterr().err.startswith("wave 1 rollout: 2/2 batches, 11 records")


def test_live_display_on_a_terminal_and_logging_printed_above_it():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with StageLines(1, console=console) as view:
        assert view.live
        _identity_stage()
        progress.stage_started(1, "screening")
        progress.batches_planned(1, "screening", 10)
        progress.batch_done(1, "screening", {"counts": {"eligible": 70, "EXCLUDED_STUDENT": 30}})
    text = out.getvalue()
    assert "identity" in text and "3/3 batches" in text and "2,050 records" in text
    assert "done in 2.5 s" in text
    assert "screening" in text and "1/10 batches" in text and "ETA" in text
    assert "{" not in text


def test_a_failing_display_never_fails_the_wave(caplog):
    calls = []

    def broken(event):
        calls.append(event.kind)
        raise RuntimeError("display broke")

    with caplog.at_level(logging.WARNING, "prakerja"), progress.listen(broken):
        progress.stage_started(1, "intake")  # the listener fails: dropped, logged
        progress.stage_finished(1, "intake", {"counts": {}}, 0.1)
    assert calls == ["started"]
    assert "progress display failed" in caplog.text
    assert progress.records_of({"counts": {"a": 2, "b": 3, "flag": True}}) == 5


def test_intake_shows_its_rows_while_it_inserts_them():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with StageLines(1, console=console):
        progress.stage_started(1, "intake")
        progress.records_so_far(1, "intake", 1234)
        progress.records_so_far(1, "intake", 50_000)
    text = out.getvalue()
    assert "intake" in text and "50,000 records" in text and "so far" in text


def _finished_line(stage: str, counts: dict[str, int], capsys) -> str:
    with StageLines(1, live=False):
        progress.stage_started(1, stage)
        progress.stage_finished(1, stage, {"counts": counts}, 1.0)
    return capsys.readouterr().err.strip()


def test_the_intake_line_says_how_many_rows_intake_refused_and_why(capsys):
    counts = {"rows": 100_000, "inserted": 100_000, "skipped": 0}
    counts |= {"EMAIL_UNVERIFIED": 26_042, "DUPLICATE_NIK": 310}
    line = _finished_line("intake", counts, capsys)
    assert line.endswith(
        "; 100,000 rows: 73,648 in, 26,352 rejected (email unverified 26,042, duplicate nik 310)"
    ), line
    rerun = _finished_line("intake", {"rows": 10, "inserted": 0, "skipped": 10}, capsys)
    assert rerun.endswith("; 10 rows: 10 in, none rejected; 10 already loaded by an earlier run")


def test_the_draw_and_accounts_lines_add_up_to_the_funnels_selected(capsys):
    """selected (funnel) = drawn (the draw's line) + backfilled (the accounts' line)."""
    draw = {"pool_size": 16_000, "selected": 3_353, "household_cap": 12, "waitlisted": 12_635}
    line = _finished_line("draw", {**draw, "quota": 3_353, "without_pending": 0}, capsys)
    assert line.endswith(
        "; drew 3,353 of quota 3,353 from 16,000 eligible; 12 passed over (household cap), "
        "12,635 waitlisted"
    ), line
    accounts = {"confirmed": 3_353, "ACCOUNT_NOT_FOUND": 505, "backfilled": 505}
    line = _finished_line("accounts", {**accounts, "backfill_household_cap": 0}, capsys)
    assert line.endswith(
        "; confirmed 3,353, ACCOUNT_NOT_FOUND 505; backfilled 505 freed seats from the waitlist"
    ), line
    held = _finished_line("draw", {"held_by_pending": 7}, capsys)
    assert held.endswith("; not drawn yet: 7 registrants still pending before it"), held


def test_the_rollout_line_says_the_refused_credits_in_words(capsys):
    line = _finished_line("rollout", {"credited": 3_343, "CREDIT_REJECTED": 10}, capsys)
    assert line.endswith(
        "; credited 3,343; the card issuer refused 10 credits "
        "(CREDIT_REJECTED: a person must look at them)"
    ), line
    one = _finished_line("rollout", {"credited": 66, "CREDIT_REJECTED": 1}, capsys)
    assert one.endswith(
        "; credited 66; the card issuer refused 1 credit "
        "(CREDIT_REJECTED: a person must look at them)"
    ), one
