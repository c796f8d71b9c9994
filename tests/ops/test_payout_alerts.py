"""The payout runs' alerts (operations.md, "Alerts"): each prakerja.payout.* event becomes a
notification that names the run's date and its counts, never a NIK; the daily-payouts
deployment is served and deployed alike."""

from __future__ import annotations

import re

import pytest

from deployments.automations import ALERTS, PAYOUT_ALERTS, automation_name
from tests.ops.test_ops_units import _event, _render

SAMPLES = {
    "prakerja.payout.completed": {"as_of": "2027-01-07", "pending": 0},
    "prakerja.payout.pending": {"as_of": "2027-01-07", "pending": 17},
    "prakerja.payout.awaiting-sign-off": {
        "as_of": "2027-01-07",
        "payments": 412,
        "total_amount": 247_200_000,
        "required": 2,
    },
    "prakerja.payout.stopped": {
        "as_of": "2027-01-07",
        "stopped": {"EXCLUDED_CIVIL_SERVANT": 3, "DECEASED": 1},
    },
    "prakerja.payout.mismatch": {"as_of": "2027-01-07", "partners": {"bank-a": False}},
}


def test_every_payout_event_has_an_alert_set_up_by_ops_setup():
    assert {a.expect[0] for a in PAYOUT_ALERTS} == set(SAMPLES)
    assert all(a in ALERTS for a in PAYOUT_ALERTS)


@pytest.mark.parametrize("alert", PAYOUT_ALERTS, ids=lambda a: a.name)
def test_each_payout_alert_names_the_run_and_its_counts(alert):
    payload = SAMPLES[alert.expect[0]]
    event = _event(alert.expect[0], payload, {"prefect.resource.id": "prakerja.payout.2027-01-07"})
    subject, body = _render(alert.subject, event), _render(alert.body, event)
    assert "2027-01-07" in subject
    text = subject + "\n" + body
    for value in payload.values():
        if isinstance(value, int) and not isinstance(value, bool) and value:
            assert re.search(rf"\b{value}\b", text), (value, text)
    if "stopped" in payload:
        assert "EXCLUDED_CIVIL_SERVANT 3" in body and "DECEASED 1" in body
    if "partners" in payload:
        assert "bank-a" in body
    assert "{{" not in text and "{%" not in text
    assert automation_name(alert).startswith("prakerja: ")


def test_daily_payouts_is_served_and_deployed_at_02_00_jakarta():
    import yaml

    from deployments.serve import DEPLOYMENTS

    served = {d.name: d for d in DEPLOYMENTS}["daily-payouts"]
    assert served.cron == "0 2 * * *"
    deployed = {
        d["name"]: d for d in yaml.safe_load(open("prefect.yaml", encoding="utf-8"))["deployments"]
    }["daily-payouts"]
    assert deployed["entrypoint"] == served.entrypoint == "flows/operations.py:daily_payouts"
    assert deployed["schedules"] == [
        {"cron": "0 2 * * *", "timezone": "Asia/Jakarta", "active": True}
    ]
