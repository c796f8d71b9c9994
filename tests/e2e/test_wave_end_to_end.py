"""A whole wave under Prefect against the partner simulator over real HTTP."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import date, datetime, time

import pytest
import requests

from tests.e2e.oracle import expected_outcomes, read_truth

SEED = "e2e-seed"
LOTTERY = "e2e-lottery"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 2500
QUOTA = 120


@pytest.fixture
def wave_files(tmp_path):
    from partners.simulator.generate import generate_export

    export, truth = tmp_path / "wave.csv", tmp_path / "truth.csv"
    generate_export(
        export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE, truth_path=truth
    )
    return export, truth


@pytest.fixture
def simulator():
    from partners.simulator.server import SimulatorThread

    with SimulatorThread(SEED) as sim:
        yield sim


def _stats(sim) -> dict:
    return requests.get(f"{sim.base_url}/_admin/stats", timeout=5).json()


def _run(export, sim, **kw) -> int:
    from cli import run_wave_command
    from partners.config import simulator_config

    return run_wave_command(
        wave_id=1,
        registrants=str(export),
        quota=kw.pop("quota", QUOTA),
        lottery_seed=LOTTERY,
        keep_open=False,
        draw_without_pending=False,
        flags={"reference_date": datetime.combine(REFERENCE, time()), **kw},
        partners_config=simulator_config(sim.base_url),
        quiet=True,
    )


def _export(sessions, tmp_path) -> dict[int, tuple[str, str, str]]:
    from readmodels.reporting import export_outcomes

    out = tmp_path / "outcomes.csv"
    export_outcomes(sessions, 1, out)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["line", "registration_id", "nik", "outcome", "reason"]
    return {int(r["line"]): (r["outcome"], r["reason"], r["nik"]) for r in rows}


@pytest.mark.parametrize(
    "batch", [10_000, 400], ids=["one-batch-in-process", "batches-in-worker-processes"]
)
def test_every_registrant_gets_the_outcome_the_partners_truth_implies(
    batch, prefect_server, sessions, simulator, wave_files, tmp_path, monkeypatch
):
    from runtime import workers

    # More than one batch: identity and screening run in worker processes, whose calls
    # share each partner's limits; the outcomes must be the same.
    monkeypatch.setenv("PRAKERJA_BATCH_SIZE", str(batch))
    monkeypatch.setenv("PRAKERJA_WORKER_PROCESSES", "2")
    export, truth_path = wave_files
    code = _run(export, simulator)
    assert code == 0
    assert (workers.peak_rss_mb() is not None) == (batch < REGISTRANTS), "workers ran"

    got = _export(sessions, tmp_path)
    truth = read_truth(str(truth_path), str(export))
    assert len(got) == len(truth) == REGISTRANTS
    expected = expected_outcomes(truth, seed=LOTTERY, quota=QUOTA)
    wrong = {
        line: (got[line][:2], want) for line, want in expected.items() if got[line][:2] != want
    }
    assert not wrong, f"{len(wrong)} registrants differ, e.g. {list(wrong.items())[:5]}"
    credited = sum(1 for o, _r, _n in got.values() if o == "CREDITED")
    assert credited > 0

    from readmodels.reporting import reconcile, wave_report
    from runtime.app import get_runtime

    rt = get_runtime()
    with sessions() as session:
        report = wave_report(session, 1)
    outcome_counts = Counter(o for o, _r, _n in got.values())
    assert report["outcomes"] == dict(outcome_counts)
    assert report["registrants"] == REGISTRANTS
    assert report["funnel"]["credited"] == credited
    assert report["credited_amount"] == credited * 1_000_000
    assert report["messages"].get("ACCEPTED", 0) + report["messages"].get("REJECTED", 0) == credited

    recon = reconcile(rt.sessions, rt.partners.issuer, 1)
    assert recon["ok"], recon
    assert recon["ledger_count"] == recon["statement_count"] == credited

    from readmodels.reporting import explain

    sample = next(line for line, (o, _r, _n) in got.items() if o == "CREDITED")
    with sessions() as session:
        story = explain(session, 1, got[sample][2])
    assert (story["outcome"], story["reason"]) == got[sample][:2]
    assert [c["stage"] for c in story["checks"]][:4] == [
        "intake",
        "local-eligibility",
        "identity",
        "screening",
    ]

    # A second run of a finished wave calls no partner and changes nothing.
    before = _stats(simulator)
    assert _run(export, simulator) == 0
    after = _stats(simulator)
    assert after["calls"] == before["calls"]
    assert _export(sessions, tmp_path) == got
    stats = json.dumps(after)
    assert "messages_duplicate_keys" in stats
