"""A registrant naming a payout provider the partners file does not configure."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from tests.e2e.oracle import expected_outcomes
from tests.faults.conftest import (
    LOTTERY,
    QUOTA,
    assert_oracle,
    exported,
    fast_partners,
    make_wave_files,
    reconcile_now,
    report,
    run_wave,
)

UNKNOWN = "bank-z"  # no [[payment_providers]] entry has this id
RENAMED = "wallet-b"


def _start_lines(path) -> dict[int, dict]:
    """line -> row (as a dict) for every well-formed data row, by the line it starts on."""
    rows = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        start = reader.line_num + 1
        for row in reader:
            if len(row) == len(header):
                rows[start] = dict(zip(header, row, strict=True))
            start = reader.line_num + 1
    return rows


def test_an_unconfigured_provider_is_account_not_found_and_its_seat_is_backfilled(
    prefect_server, sessions, simulator, tmp_path
):
    files = make_wave_files(tmp_path)
    # Everyone with wallet-b now names a provider nobody configured.
    text = files.export.read_text(encoding="utf-8")
    assert text.count(f",{RENAMED},") > 0
    files.export.write_text(text.replace(f",{RENAMED},", f",{UNKNOWN},"), encoding="utf-8")
    by_line = _start_lines(files.export)
    unknown_lines = {line for line, row in by_line.items() if row["payout_provider"] == UNKNOWN}
    # What the README promises: ACCOUNT_NOT_FOUND, the seat freed for the waitlist.
    for r in files.truth:
        if r["line"] in unknown_lines:
            r["account_status"] = "NOT_FOUND"
    expected = expected_outcomes(files.truth, seed=LOTTERY, quota=QUOTA)

    code = run_wave(files.export, fast_partners(simulator.base_url))
    assert code == 0
    got = exported(sessions, tmp_path)
    assert_oracle(got, expected)

    refused = {line for line in unknown_lines if got[line] == ("REJECTED", "ACCOUNT_NOT_FOUND")}
    assert refused, "some registrant with the unknown provider was drawn"
    # Nobody was sent to a partner that does not exist, and nobody was skipped silently.
    assert not simulator.calls(partner=UNKNOWN)
    assert all(got[line][0] != "PENDING" for line in unknown_lines)

    rep = report(sessions)
    credited = Counter(o for o, _r in got.values())["CREDITED"]
    credit_rejected = Counter(got.values())[("REJECTED", "CREDIT_REJECTED")]
    # Every seat freed by a failed account was filled again from the waitlist.
    assert credited + credit_rejected == QUOTA
    account_failed = sum(n for reason, n in rep["reasons"].items() if reason.startswith("ACCOUNT_"))
    assert account_failed >= len(refused)
    assert rep["funnel"]["selected"] == QUOTA + account_failed
    assert reconcile_now()["ok"]

    from readmodels.reporting import explain

    line = min(refused)
    with sessions() as session:
        story = explain(session, 1, by_line[line]["nik"])
    assert (story["outcome"], story["reason"]) == ("REJECTED", "ACCOUNT_NOT_FOUND")
    accounts = [c for c in story["checks"] if c["stage"] == "accounts"]
    assert accounts and accounts[0]["answer"] == "PROVIDER_NOT_CONFIGURED", story["checks"]


@pytest.fixture
def database_url(tmp_path, monkeypatch) -> str:
    """SQLite only: partner-fault handling does not depend on the database engine, and
    these waves are the slowest tests (the engines are compared in tests/tasks, e2e, cli)."""
    url = f"sqlite:///{tmp_path}/prakerja.db"
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", url)
    return url
