"""Operations without a server: the pacing rule, the drop folder, the alert templates."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from uuid import uuid4

import pytest

from deployments.automations import ALERTS, automation_name
from rules.pacing import pace
from rules.settings import SettingsError
from tasks import drop

NOW = datetime(2026, 11, 28, 15, 0)  # 22:00 Asia/Jakarta
DEADLINE = datetime(2026, 11, 28, 23, 0)  # 06:00 Asia/Jakarta


# ---------------------------------------------------------------- pacing
def test_the_pause_spreads_the_spare_time_until_deadline_minus_margin():
    p = pace(now=NOW, deadline=DEADLINE, steps_left=10, step_s=60, margin_s=3600, max_pause_s=1e9)
    # 8 h window - 1 h margin - 10 min of work = 410 min spread over 10 steps
    assert p.pause_s == pytest.approx(41 * 60)
    assert p.projected_finish == DEADLINE - timedelta(hours=1)
    assert p.fastest_finish == NOW + timedelta(minutes=10)
    assert not p.late


def test_the_pause_is_capped_and_never_negative():
    capped = pace(now=NOW, deadline=DEADLINE, steps_left=2, step_s=1, margin_s=0, max_pause_s=300)
    assert capped.pause_s == 300
    assert capped.projected_finish < DEADLINE
    tight = pace(
        now=NOW, deadline=DEADLINE, steps_left=100, step_s=300, margin_s=0, max_pause_s=300
    )
    assert tight.pause_s == 0  # 500 min of work in a 480 min window: flat out, and late
    assert tight.late
    assert tight.minutes_late(DEADLINE) == 20


def test_a_deadline_already_passed_is_late_and_not_paced():
    p = pace(
        now=DEADLINE + timedelta(minutes=5),
        deadline=DEADLINE,
        steps_left=1,
        step_s=0,
        margin_s=3600,
        max_pause_s=300,
    )
    assert p.late and p.pause_s == 0
    done = pace(now=NOW, deadline=DEADLINE, steps_left=0, step_s=5, margin_s=0, max_pause_s=300)
    assert not done.late and done.projected_finish == NOW


def test_no_pacing_when_max_pause_is_zero():
    p = pace(now=NOW, deadline=DEADLINE, steps_left=50, step_s=1, margin_s=0, max_pause_s=0)
    assert p.pause_s == 0 and p.projected_finish == p.fastest_finish


# ---------------------------------------------------------------- drop folder
def test_the_due_wave_is_the_lowest_export_without_a_wave(tmp_path):
    for n in (3, 1, 12):
        (tmp_path / f"wave-{n}.csv").write_text("x")
    (tmp_path / "wave-4.csv.part").write_text("x")  # still being written
    (tmp_path / "wave-05.csv").write_text("x")  # not the convention
    (tmp_path / "notes.csv").write_text("x")
    assert sorted(drop.exports_in(tmp_path)) == [1, 3, 12]
    due = drop.due_wave(tmp_path, existing=[1, 2])
    assert (due.wave_id, due.export.name, due.settings_file.name) == (
        3,
        "wave-3.csv",
        "wave-3.toml",
    )
    assert drop.due_wave(tmp_path, existing=[1, 3, 12]) is None
    assert drop.due_wave(tmp_path / "absent", existing=[]) is None


def test_the_drop_folder_comes_from_the_environment():
    from models.config import read_settings

    assert str(drop.drop_dir(read_settings({}))) == "var/drop"
    assert str(drop.drop_dir(read_settings({"PRAKERJA_DROP_DIR": "/srv/drop"}))) == "/srv/drop"


def test_wave_settings_are_read_and_checked(tmp_path):
    f = tmp_path / "wave-3.toml"
    f.write_text('quota = 200000\nreference_date = 2026-11-26\nallocation = "provincial"\n')
    assert drop.read_wave_settings(f) == {
        "quota": 200000,
        "reference_date": date(2026, 11, 26),
        "allocation": "provincial",
    }
    for text, named in [
        ("min_age = 18\n", "quota"),
        ("quota = 5\nquotta = 6\n", "quotta"),
        ('quota = 5\nlottery_seed = "abc"\n', "lottery_seed"),
        ('quota = "many"\n', "quota"),
        ("quota = true\n", "quota"),
        ("quota = 5\nbackfill = 1\n", "backfill"),
        ("quota = 5\nreference_date = 2026-11-26T10:00:00\n", "reference_date"),
        ("quota = \n", "malformed"),
    ]:
        f.write_text(text)
        with pytest.raises(SettingsError, match=named):
            drop.read_wave_settings(f)
    with pytest.raises(SettingsError, match="missing"):
        drop.read_wave_settings(tmp_path / "wave-9.toml")


# ---------------------------------------------------------------- alert templates
def _event(name: str, payload: dict, resource: dict | None = None, related=None):
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(
        occurred=datetime.now().astimezone(),
        event=name,
        resource=resource or {"prefect.resource.id": "prakerja.wave.7"},
        related=related or [],
        payload=payload,
        id=uuid4(),
    )


FUNNEL = {"registered": 1000, "eligible": 300, "selected": 40, "confirmed": 38, "credited": 30}
SAMPLES = {
    "prakerja.partner.failed": {
        "wave_id": 7,
        "stage": "screening",
        "partner": "education",
        "items": 1000,
        "error_class": "HTTPStatus503",
        "needs_person": False,
    },
    "prakerja.wave.pending": {
        "wave_id": 7,
        "pending": {"PENDING_SCREENING": 812, "PENDING_ROLLOUT": 8},
        "funnel": FUNNEL,
        "credited_amount": 30_000_000,
    },
    "prakerja.wave.completed": {
        "wave_id": 7,
        "pending": {},
        "funnel": FUNNEL,
        "credited_amount": 30_000_000,
        "waiting_for_credit": 8,
    },
    "prakerja.rollout.late": {
        "wave_id": 7,
        "stage": "rollout",
        "confirmed": 38,
        "batches_total": 40,
        "batches_left": 39,
        "projected_finish": "2026-11-28T23:40:00Z",
        "deadline": "2026-11-28T23:00:00Z",
        "minutes_late": 40,
    },
    "prakerja.reconcile.mismatch": {
        "wave_id": 7,
        "ledger_count": 30,
        "ledger_amount": 30_000_000,
        "statement_count": 29,
        "statement_amount": 29_000_000,
        "missing_in_statement": 1,
        "unknown_in_statement": 0,
        "amount_mismatches": 0,
        "ok": False,
    },
    "prakerja.credit.rejected": {"wave_id": 7, "stage": "rollout", "rejected": 3, "credited": 35},
    "prakerja.wave.awaiting-sign-off": {
        "wave_id": 7,
        "seats": 40,
        "confirmed": 38,
        "amount": 38_000_000,
        "required": 2,
        "approvals": 1,
        "digest": "ab" * 32,
    },
    "prakerja.export.missing": {
        "wave_id": 7,
        "expected_file": "wave-7.csv",
        "drop_dir": "/srv/drop",
        "exports_seen": 6,
    },
}


def _render(template: str, event) -> str:
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import (
        register_user_template_filters,
        render_user_template_sync,
    )

    register_user_template_filters(all_filters)
    return render_user_template_sync(template, {"event": event})


@pytest.mark.parametrize(
    "alert", [a for a in ALERTS if a.expect[0] in SAMPLES], ids=lambda a: a.name
)
def test_each_event_alert_names_the_wave_and_its_counts(alert):
    payload = SAMPLES[alert.expect[0]]
    resource = (
        {"prefect.resource.id": "prakerja.partner.education"}
        if alert.expect[0] == "prakerja.partner.failed"
        else None
    )
    event = _event(alert.expect[0], payload, resource)
    subject, body = _render(alert.subject, event), _render(alert.body, event)
    assert "wave 7" in subject.lower()
    text = subject + "\n" + body
    numbers = [v for v in payload.values() if isinstance(v, int) and not isinstance(v, bool)]
    for n in numbers:
        assert re.search(rf"\b{n}\b", text), (n, text)
    for key in ("stage", "partner"):
        if key in payload:
            assert payload[key] in text
    assert "{{" not in text and "{%" not in text
    assert automation_name(alert).startswith("prakerja: ")


def test_the_wave_pending_alert_lists_every_pending_reason():
    alert = next(a for a in ALERTS if a.expect == ("prakerja.wave.pending",))
    body = _render(alert.body, _event("prakerja.wave.pending", SAMPLES["prakerja.wave.pending"]))
    assert "PENDING_SCREENING 812, PENDING_ROLLOUT 8" in body


def test_a_failed_run_alert_names_the_run_and_its_flow_without_the_state_message():
    alert = next(a for a in ALERTS if "prefect.flow-run.Failed" in a.expect)
    event = _event(
        "prefect.flow-run.Failed",
        {},
        {
            "prefect.resource.id": "prefect.flow-run.5c3e0000-0000-0000-0000-000000000001",
            "prefect.resource.name": "wave-7-screening",
            "prefect.state-name": "Failed",
            "prefect.state-message": "ValueError: 3171010101900001 broke",
        },
        [
            {
                "prefect.resource.id": "prefect.flow.1",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "screening",
            },
            {"prefect.resource.id": "prefect.tag.wave-7", "prefect.resource.role": "tag"},
        ],
    )
    subject, body = _render(alert.subject, event), _render(alert.body, event)
    assert subject == "[prakerja] wave-7-screening failed"
    assert "(flow screening)" in body and "5c3e0000-0000-0000-0000-000000000001" in body
    assert "3171010101900001" not in subject + body


def test_the_completed_alert_says_how_many_still_wait_for_their_credit():
    alert = next(a for a in ALERTS if a.expect == ("prakerja.wave.completed",))
    body = _render(
        alert.body, _event("prakerja.wave.completed", SAMPLES["prakerja.wave.completed"])
    )
    assert "8 confirmed participants wait for their credit" in body
    done = {
        **SAMPLES["prakerja.wave.completed"],
        "funnel": {**FUNNEL, "credited": 38},
        "waiting_for_credit": 0,
    }
    assert "wait for their credit" not in _render(
        alert.body, _event("prakerja.wave.completed", done)
    )


def test_credits_the_issuer_refused_are_not_counted_as_waiting():
    # 38 confirmed, 30 credited, 8 refused by the issuer: nobody waits for a credit.
    alert = next(a for a in ALERTS if a.expect == ("prakerja.wave.completed",))
    refused = {**SAMPLES["prakerja.wave.completed"], "waiting_for_credit": 0}
    body = _render(alert.body, _event("prakerja.wave.completed", refused))
    assert "wait for their credit" not in body, body


def test_the_report_counts_waiting_credits_from_the_ledger(sessions):
    """Confirmed 4: one credited, one refused by the issuer, one written and unanswered
    (ledger PENDING), one with no ledger row yet: 2 wait for their credit, not 3."""
    from models.enums import LedgerStatus
    from models.tables import LedgerEntry, Registrant
    from readmodels.reporting import wave_report
    from tasks.common import utcnow
    from tests.tasks.factories import make_wave

    make_wave(sessions, 5)
    now = utcnow()
    rows = [
        ("CREDITED", None, LedgerStatus.APPLIED),
        ("REJECTED", "CREDIT_REJECTED", LedgerStatus.REJECTED),
        ("CONFIRMED", None, LedgerStatus.PENDING),
        ("CONFIRMED", None, None),
    ]
    with sessions() as session:
        for i, (state, reason, ledger) in enumerate(rows):
            nik, card = f"31710101019000{i:02d}", f"CARD{i}"
            session.add(
                Registrant(
                    wave_id=5,
                    line=i + 2,
                    nik=nik,
                    state=state,
                    reason=reason,
                    draw_round=1,  # a card holder was drawn
                    card_number=card,
                )
            )
            if ledger is not None:
                session.add(
                    LedgerEntry(
                        wave_id=5,
                        nik=nik,
                        benefit="TRAINING",
                        idempotency_key=f"k{i}",
                        card_number=card,
                        amount=1_000_000,
                        status=ledger,
                        created_at=now,
                        updated_at=now,
                    )
                )
        session.commit()
        report = wave_report(session, 5)
    assert report["funnel"]["confirmed"] == 4 and report["funnel"]["credited"] == 1
    assert report["waiting_for_credit"] == 2


def _failed_run(run_name: str, flow_name: str, deployment: str | None):
    related = [
        {
            "prefect.resource.id": "prefect.flow.1",
            "prefect.resource.role": "flow",
            "prefect.resource.name": flow_name,
        },
        {"prefect.resource.id": "prefect.tag.wave-7", "prefect.resource.role": "tag"},
    ]
    if deployment:
        related.insert(
            1,
            {
                "prefect.resource.id": "prefect.deployment.2",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": deployment,
            },
        )
    return _event(
        "prefect.flow-run.Failed",
        {},
        {
            "prefect.resource.id": "prefect.flow-run.5c3e0000-0000-0000-0000-000000000002",
            "prefect.resource.name": run_name,
            "prefect.state-name": "Failed",
        },
        related,
    )


def test_a_failed_run_alert_names_its_own_deployment_and_advice():
    alert = next(a for a in ALERTS if "prefect.flow-run.Failed" in a.expect)
    quota = _render(alert.body, _failed_run("wave-7-raise-quota-50", "raise-quota", "raise-quota"))
    assert "(flow raise-quota, deployment raise-quota)" in quota, quota
    assert "run the deployment raise-quota again" in quota
    assert "stage artifacts" not in quota
    rerun = _render(
        alert.body, _failed_run("wave-7-rerun-20261129-182205-ab12", "rerun-wave", "rerun-wave")
    )
    assert "(flow rerun-wave, deployment rerun-wave)" in rerun, rerun
    assert "raise-quota" not in rerun and "run the deployment rerun-wave" in rerun
    weekly = _render(alert.body, _failed_run("wave-7-weekly", "weekly-wave", "weekly-wave"))
    assert "deployment weekly-wave" in weekly and "raise-quota" not in weekly


# ---------------------------------------------------------------- run names
def test_two_reruns_in_the_same_second_get_different_readable_names(monkeypatch):
    from datetime import datetime as real_datetime
    from types import SimpleNamespace

    from flows import operations

    class Frozen(real_datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime(2026, 11, 29, 18, 22, 5, tzinfo=tz)

    monkeypatch.setattr(operations, "datetime", Frozen)
    monkeypatch.setattr(operations, "current_run", SimpleNamespace(parameters={"wave_id": 7}))
    first, second = operations._rerun_run_name(), operations._rerun_run_name()
    assert first != second
    for name in (first, second):
        assert re.fullmatch(r"wave-7-rerun-20261129-182205-[0-9a-f]{4}", name), name


# ---------------------------------------------------------------- the lease, from a deployment
def test_a_deployment_run_takes_the_wave_lease_and_gives_up_on_a_live_holder(sessions):
    from runtime.app import current
    from services.runs import wave_lease as app_wave_lease
    from tasks.waves import WaveBusyError, acquire_lease, release_lease
    from tests.tasks.factories import make_wave

    def wave_lease(wave_id, **options):  # a deployment's run: the app it was built with
        return app_wave_lease(current(), wave_id, **options)

    make_wave(sessions, 4)
    held = acquire_lease(sessions, 4)  # e.g. `prakerja wave run` in this (live) process
    with pytest.raises(WaveBusyError):
        with wave_lease(4, wait_s=0):
            pass
    release_lease(sessions, 4, held)
    with wave_lease(4, wait_s=0):
        with pytest.raises(WaveBusyError):  # `prakerja wave run` now exits 4
            acquire_lease(sessions, 4, wait_s=0)
    release_lease(sessions, 4, acquire_lease(sessions, 4, wait_s=0))  # released on exit
    with pytest.raises(LookupError, match="wave 77"):
        with wave_lease(77):
            pass
