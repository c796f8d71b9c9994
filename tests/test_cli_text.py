"""The text output (no `--json`) of `wave report`, `wave reconcile`, `explain` and the
funnel: readable tables, amounts as `Rp1.000.000`, the lottery seed once drawn, the
duplicate rows of a NIK, and never a Python dict or list repr."""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy import select

import cli
from models.enums import LedgerStatus, MessageStatus, State
from models.tables import LedgerEntry, Message, Registrant, Wave
from tasks.intake import import_export
from tests.tasks.factories import make_wave, person, write_export

SEED = "text-seed-42"
AT = datetime(2026, 11, 28, 12, 0)


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # rich reads it: stable output


def _no_reprs(text: str) -> None:
    assert "{" not in text and "}" not in text, text
    assert "'" not in text, text  # neither a dict's nor a list's repr quotes
    assert "\x1b[" not in text, text  # no colour codes off a terminal


def _wave(sessions, tmp_path, *, drawn: bool) -> dict[str, str]:
    """Wave 1: one credited registrant (with a later duplicate row), one pending at the
    issuer, one refused credit, one unverified email; drawn or not."""
    make_wave(sessions, quota=2, lottery_seed=SEED)
    a = person(1)
    a_dup = person(1, registration_id="reg-1b", registered_at="2026-11-25T23:00:00+07:00")
    b, c, d = person(2), person(3, email_verified="false"), person(4)
    import_export(sessions, 1, write_export(tmp_path / "w.csv", [a, a_dup, b, c, d]))
    if not drawn:
        return {"credited": a["nik"]}
    with sessions() as session, session.begin():
        wave = session.get(Wave, 1)
        wave.drawn_at, wave.pool_size, wave.pool_digest = AT, 3, "ab" * 32
        rows = {
            r.line: r for r in session.scalars(select(Registrant).where(Registrant.wave_id == 1))
        }
        credited, pending, refused = rows[2], rows[4], rows[6]
        credited.state, credited.draw_round, credited.card_number = State.CREDITED, 0, "4000-1"
        credited.drawn_at = credited.credited_at = AT
        pending.state, pending.draw_round, pending.card_number = State.CONFIRMED, 0, "4000-2"
        pending.pending_stage, pending.pending_partner = "rollout", "card-issuer"
        pending.pending_error, pending.pending_at = "ReadTimeout", AT
        refused.state = State.CONFIRMED
        for nik, status, key in (
            (credited.nik, LedgerStatus.APPLIED, "k-1"),
            (refused.nik, LedgerStatus.REJECTED, "k-4"),
        ):
            session.add(
                LedgerEntry(
                    wave_id=1, nik=nik, benefit="training", idempotency_key=key,
                    card_number="4000-x" + key, amount=1_000_000, status=status,
                    transfer_id="t-" + key, created_at=AT, updated_at=AT,
                )
            )  # fmt: skip
        session.add(
            Message(
                wave_id=1, nik=credited.nik, idempotency_key="m-1", phone="+62812",
                template="balance_credited", params_json="{}",
                status=MessageStatus.ACCEPTED, created_at=AT, sent_at=AT,
            )
        )  # fmt: skip
    return {"credited": a["nik"]}


def _invoke(args: list[str]):
    return CliRunner().invoke(cli.main, args, catch_exceptions=False)


def test_report_text_before_the_draw_keeps_the_seed_secret(sessions, tmp_path):
    _wave(sessions, tmp_path, drawn=False)
    before = _invoke(["wave", "report", "--wave", "1"])
    assert before.exit_code == 0, before.output
    assert SEED not in before.output and "shown after the draw" in before.output
    _no_reprs(before.output)
    assert "no credits yet" in before.output and "not announced" in before.output


def test_report_text_after_the_draw(sessions, tmp_path):
    _wave(sessions, tmp_path, drawn=True)
    result = _invoke(["wave", "report", "--wave", "1"])
    assert result.exit_code == 0, result.output
    out = result.output
    _no_reprs(out)
    assert SEED in out  # README: the seed itself is shown by `report` after the draw
    assert "Rp1.000.000" in out  # credited amount and training balance
    for word in ("APPLIED", "REJECTED", "ACCEPTED", "EMAIL_UNVERIFIED", "DUPLICATE_NIK",
                 "PENDING_ROLLOUT", "card-issuer", "credited"):  # fmt: skip
        assert word in out, word
    # The JSON stays as it was.
    doc = json.loads(_invoke(["wave", "report", "--wave", "1", "--json"]).output)
    assert doc["lottery_seed"] == SEED and doc["ledger"] == {"APPLIED": 1, "REJECTED": 1}


def test_funnel_text_of_wave_run_has_no_dict_and_rupiah(sessions, tmp_path, capsys):
    from readmodels.reporting import wave_report

    _wave(sessions, tmp_path, drawn=True)
    with sessions() as session:
        report = wave_report(session, 1)
    assert report["pending"]  # the old text printed it as a dict
    cli._print_funnel(report)
    out = capsys.readouterr().out
    _no_reprs(out)
    assert "Rp1.000.000" in out and "PENDING_ROLLOUT" in out and "credited" in out


def test_explain_text_lists_the_duplicate_rows(sessions, tmp_path):
    niks = _wave(sessions, tmp_path, drawn=True)
    result = _invoke(["explain", "--wave", "1", "--nik", niks["credited"]])
    assert result.exit_code == 0, result.output
    out = result.output
    _no_reprs(out)
    doc = json.loads(
        _invoke(["explain", "--wave", "1", "--nik", niks["credited"], "--json"]).output
    )
    assert doc["other_lines"] == [{"line": 3, "reason": "DUPLICATE_NIK"}]
    assert "line 2: CREDITED" in out
    dup = [ln for ln in out.splitlines() if "DUPLICATE_NIK" in ln]
    assert dup and " 3 " in dup[0], out
    assert "Rp1.000.000" in out  # the rollout check's amount


def test_reconcile_text_has_rupiah_and_the_refused_credits_without_a_dict(
    sessions, tmp_path, monkeypatch
):
    import readmodels.reporting as reporting

    _wave(sessions, tmp_path, drawn=True)
    real = reporting.reconcile
    statement = [SimpleNamespace(idempotency_key="k-1", amount=1_000_000)]
    issuer = SimpleNamespace(statement=lambda reference: iter(statement))
    monkeypatch.setattr(
        reporting, "reconcile", lambda sessions, _issuer, wave_id: real(sessions, issuer, wave_id)
    )
    result = _invoke(["wave", "reconcile", "--wave", "1"])
    out = result.output
    _no_reprs(out)
    assert "Rp1.000.000" in out and "1000000" not in out
    refused = [ln for ln in out.splitlines() if "REJECTED" in ln]
    assert refused and refused[0].rstrip(" │|").endswith("1"), out
    assert "Reconciled:" in out
    doc = json.loads(_invoke(["wave", "reconcile", "--wave", "1", "--json"]).output)
    assert doc["refused"] == {"REJECTED": 1} and doc["ledger_amount"] == 1_000_000
    assert result.exit_code == (0 if doc["ok"] else 1)
