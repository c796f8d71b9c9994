"""Lifecycle rows for a drawn wave's CREDITED registrants, by bulk inserts: a read benchmark's
data (bench/portal_load.py), not a payout run.

What lifecycle.md says a payout run leaves about 65 days after the credit, for every
CREDITED registrant of the wave (a `participant` row each, keyed by its card):

- about 10% REVOKED `NO_TRAINING_IN_TIME` (no purchase by the deadline; the card closed
  the day after it, the whole balance returned);
- about 4% IN_TRAINING (a course bought, none finished yet);
- about 1% STOPPED `EXCLUDED_CIVIL_SERVANT` (trained; installment 1 paid, the re-check
  before installment 2 found them on the civil-service list: installment 2 STOPPED);
- the rest TRAINED: incentive installments 1 and 2 PAID (due on first completion + 0 and
  + 30 days, paid by the 02:00 WIB daily run), a few with installment 2 (and fewer with
  both) FAILED `ACCOUNT_CLOSED`;
- of those whose installment 1 was paid, about half answered survey 1 (some days after
  it), and survey payment 1 was PAID the next day for most of them (the rest answered
  "yesterday": no ledger row yet, shown DUE).

Dates follow the registrant's own `credited_at` (its WIB date is `credited_on`, as
`payout run`'s enrolment records it; deadline = credited_on + 30): the rows describe the
wave as it will be at credited_on + 65 days. A wave built today therefore has payments
paid "in the future" of the machine's clock; the dashboard shows installments 3 and 4 as
SCHEDULED. Nobody has answered survey 2, which is OPEN for every TRAINED participant
whose installment 2 was paid: the survey-submission phase answers it.

Idempotent: a wave whose participants are all there is left as it is (unless
`reseed=True`, which deletes the wave's lifecycle rows and writes them again);
`reset_survey` removes the answers to one survey (an earlier benchmark run's).

    .venv/bin/python bench/lifecycle_seed.py --database sqlite:///bench/out/.../prefect.db
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AS_OF_DAYS = 65  # the rows describe the wave this many days after its credit
REVOKED_SHARE = 0.10
IN_TRAINING_SHARE = 0.04
STOPPED_SHARE = 0.01
BOTH_FAILED_SHARE = 0.003  # of the TRAINED: installments 1 and 2 FAILED ACCOUNT_CLOSED
SECOND_FAILED_SHARE = 0.005  # of the TRAINED: installment 2 FAILED ACCOUNT_CLOSED
SURVEY_1_SHARE = 0.5  # of those whose installment 1 was paid
SURVEY_1_PAID_SHARE = 0.8  # of those who answered survey 1
PRICES = (150_000, 200_000, 250_000, 350_000, 500_000)
WIB = timedelta(hours=7)
CHUNK = 20_000
ANSWERS = {
    "work_status": ("employed", "own_business", "not_working"),
    "training_helped": (1, 2, 3, 4, 5),
    "field": ("digital", "sales", "hospitality", "language", "trades", "other"),
    "applied_for_job": (True, False),
    "recommend": (True, False),
}
AGENCIES = (
    "civil-service",
    "education",
    "legislature",
    "military-police",
    "social-aid",
    "soe",
    "village",
)


def log(msg: str) -> None:
    print(f"[lifecycle_seed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _naive(value) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo else value
    return datetime.fromisoformat(str(value))


def _run_at(day: date, rng: random.Random) -> datetime:
    """A moment of the daily payout run of `day` (02:00 WIB, cron `0 2 * * *`), naive UTC."""
    return datetime(day.year, day.month, day.day, 2) - WIB + timedelta(seconds=rng.randrange(3600))


def _checks(listed: bool) -> str:
    checks: dict[str, bool] = {a: False for a in AGENCIES}
    checks["civil-service"] = listed
    checks["blacklist"] = False
    checks["registry_deceased"] = False
    return json.dumps(checks, sort_keys=True)


class Rows:
    """The three tables' rows, built in id order from one seeded generator."""

    def __init__(self, wave_id: int, seed: str, settings) -> None:
        self.wave_id = wave_id
        self.rng = random.Random(f"lifecycle:{seed}:{wave_id}")
        self.s = settings
        self.participants: list[dict] = []
        self.payments: list[dict] = []
        self.surveys: list[dict] = []
        self.counts: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def payment(self, r, benefit: str, k: int, due: date, status: str, reason: str | None):
        rng = self.rng
        at = _run_at(due, rng)
        amount = self.s["incentive_amount"] if benefit == "incentive" else self.s["survey_amount"]
        self.payments.append(
            {
                "wave_id": self.wave_id,
                "registrant_id": r.id,
                "nik": r.nik,
                "benefit": benefit,
                "installment": k,
                "amount": int(amount),
                "due_on": due,
                "idempotency_key": f"w{self.wave_id}:{r.nik}:{benefit}:{k}",
                "provider": r.payout_provider,
                "account": r.payout_account,
                "status": status,
                "reason": reason,
                "checked_on": due,
                "checks_json": _checks(reason == "EXCLUDED_CIVIL_SERVANT"),
                "reference": f"payout-{due.isoformat()}",
                "run_as_of": due,
                "transfer_id": f"tr-{rng.getrandbits(64):016x}" if status == "PAID" else None,
                "attempts": 0 if status == "STOPPED" else 1,
                "last_error": None,
                "created_at": at - timedelta(seconds=30),
                "updated_at": at,
            }
        )
        self._count(f"{benefit}_{k}_{status.lower()}")

    def add(self, r) -> None:
        rng, s = self.rng, self.s
        credited_at = _naive(r.credited_at)
        credited_on = (credited_at + WIB).date()
        deadline = credited_on + timedelta(days=int(s["first_training_days"]))
        as_of = credited_on + timedelta(days=AS_OF_DAYS)
        balance = int(s["training_balance"])
        row = {
            "registrant_id": r.id,
            "wave_id": self.wave_id,
            "nik": r.nik,
            "card_number": r.card_number,
            "credited_amount": balance,
            "credited_on": credited_on,
            "deadline_on": deadline,
            "reason": None,
            "first_purchase_on": None,
            "first_completion_on": None,
            "balance_left": balance,
            "late_purchase": False,
            "orphan_completions": 0,
            "card_used_at_issuer": False,
            "revoke_reason": None,
            "revoke_status": None,
            "amount_returned": None,
            "revoked_on": None,
            "revoke_error": None,
            "events_seen": 0,
            "updated_at": _run_at(as_of, rng),
        }
        u = rng.random()
        if u < REVOKED_SHARE:
            revoked_on = deadline + timedelta(days=1)
            row.update(
                state="REVOKED",
                reason="NO_TRAINING_IN_TIME",
                state_on=revoked_on,
                revoke_reason="NO_TRAINING_IN_TIME",
                revoke_status="REVOKED",
                amount_returned=balance,
                revoked_on=revoked_on,
            )
            self.participants.append(row)
            self._count("revoked")
            return
        price = rng.choice(PRICES)
        if u < REVOKED_SHARE + IN_TRAINING_SHARE:
            bought = credited_on + timedelta(days=rng.randrange(0, 31))
            row.update(
                state="IN_TRAINING",
                state_on=bought,
                first_purchase_on=bought,
                balance_left=balance - price,
                events_seen=1,
            )
            self.participants.append(row)
            self._count("in_training")
            return
        # Trained: a first completion 8 to 34 days after the credit, so that installment 2
        # (completion + 30) fell due by as-of and installment 3 (completion + 60) not yet.
        bought = credited_on + timedelta(days=rng.randrange(5, 21))
        completed = bought + timedelta(days=rng.randrange(3, 15))
        interval = int(s["incentive_interval_days"])
        due = [completed + timedelta(days=(k - 1) * interval) for k in (1, 2)]
        row.update(
            first_purchase_on=bought,
            first_completion_on=completed,
            balance_left=balance - price - (rng.choice(PRICES) if rng.random() < 0.3 else 0),
            events_seen=2,
        )
        stopped = u < REVOKED_SHARE + IN_TRAINING_SHARE + STOPPED_SHARE
        v = rng.random()
        if stopped:
            reason = "EXCLUDED_CIVIL_SERVANT"
            row.update(state="STOPPED", reason=reason, state_on=due[1])
            self.payment(r, "incentive", 1, due[0], "PAID", None)
            self.payment(r, "incentive", 2, due[1], "STOPPED", reason)
            self._count("stopped")
        else:
            row.update(state="TRAINED", state_on=completed)
            if v < BOTH_FAILED_SHARE:
                self.payment(r, "incentive", 1, due[0], "FAILED", "ACCOUNT_CLOSED")
                self.payment(r, "incentive", 2, due[1], "FAILED", "ACCOUNT_CLOSED")
            elif v < BOTH_FAILED_SHARE + SECOND_FAILED_SHARE:
                self.payment(r, "incentive", 1, due[0], "PAID", None)
                self.payment(r, "incentive", 2, due[1], "FAILED", "ACCOUNT_CLOSED")
            else:
                self.payment(r, "incentive", 1, due[0], "PAID", None)
                self.payment(r, "incentive", 2, due[1], "PAID", None)
            self._count("trained")
        self.participants.append(row)
        if v < BOTH_FAILED_SHARE or rng.random() >= SURVEY_1_SHARE:
            return
        # Survey 1 opened when installment 1 was paid; answered 0 to 20 days later.
        answered_at = _run_at(due[0], rng) + timedelta(
            days=rng.randrange(0, 21), seconds=rng.randrange(3 * 3600, 14 * 3600)
        )
        answers = {name: rng.choice(choices) for name, choices in ANSWERS.items()}
        answers["comment"] = "" if rng.random() < 0.9 else "Pelatihannya bermanfaat."
        self.surveys.append(
            {
                "registrant_id": r.id,
                "survey": 1,
                "answers_json": json.dumps(answers),
                "answered_at": answered_at,
            }
        )
        self._count("survey_1_answered")
        if not stopped and rng.random() < SURVEY_1_PAID_SHARE:
            # Due at the next daily run after the answer, and paid by it.
            self.payment(
                r, "survey", 1, (answered_at + WIB).date() + timedelta(days=1), "PAID", None
            )


def _tables():
    from models.tables import Participant, Payment, SurveyResponse

    return (
        Participant.__table__,  # type: ignore[attr-defined]
        Payment.__table__,  # type: ignore[attr-defined]
        SurveyResponse.__table__,  # type: ignore[attr-defined]
    )


def _analyze(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("participant", "payment", "survey_response"):
            conn.exec_driver_sql(f"ANALYZE {table}")


def counts(engine, wave_id: int) -> dict[str, int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        credited = conn.execute(
            text("SELECT count(*) FROM registrant WHERE wave_id = :w AND state = 'CREDITED'"),
            {"w": wave_id},
        ).scalar()
        participants = conn.execute(
            text("SELECT count(*) FROM participant WHERE wave_id = :w"), {"w": wave_id}
        ).scalar()
        payments = conn.execute(
            text("SELECT count(*) FROM payment WHERE wave_id = :w"), {"w": wave_id}
        ).scalar()
    return {
        "credited": int(credited or 0),
        "participants": int(participants or 0),
        "payments": int(payments or 0),
    }


def seed_lifecycle(url: str, wave_id: int = 1, seed: str = "bench", reseed: bool = False) -> dict:
    """Lifecycle rows for every CREDITED registrant of the wave (see the module's text)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        before = counts(engine, wave_id)
        if (
            not reseed
            and before["credited"]
            and before["participants"] == before["credited"]
            and before["payments"]
        ):
            log(f"wave {wave_id}: {before['participants']:,} participants already there")
            return {"seeded": False, **before}
        started = time.monotonic()
        participant, payment, survey = _tables()
        with engine.begin() as conn:
            settings = dict(
                conn.execute(
                    text(
                        "SELECT training_balance, first_training_days, incentive_amount, "
                        "incentive_interval_days, survey_amount FROM wave WHERE wave_id = :w"
                    ),
                    {"w": wave_id},
                )
                .mappings()
                .one()
            )
            conn.execute(
                text(
                    "DELETE FROM survey_response WHERE registrant_id IN "
                    "(SELECT registrant_id FROM participant WHERE wave_id = :w)"
                ),
                {"w": wave_id},
            )
            conn.execute(text("DELETE FROM payment WHERE wave_id = :w"), {"w": wave_id})
            conn.execute(text("DELETE FROM participant WHERE wave_id = :w"), {"w": wave_id})
            credited = conn.execute(
                text(
                    "SELECT id, nik, card_number, credited_at, payout_provider, payout_account "
                    "FROM registrant WHERE wave_id = :w AND state = 'CREDITED' ORDER BY id"
                ),
                {"w": wave_id},
            ).all()
            rows = Rows(wave_id, seed, settings)
            for r in credited:
                rows.add(r)
            built_s = time.monotonic() - started
            for table, values in (
                (participant, rows.participants),
                (payment, rows.payments),
                (survey, rows.surveys),
            ):
                for i in range(0, len(values), CHUNK):
                    conn.execute(table.insert(), values[i : i + CHUNK])
        _analyze(engine)
        seconds = time.monotonic() - started
        log(
            f"wave {wave_id}: {len(rows.participants):,} participants, "
            f"{len(rows.payments):,} payments, {len(rows.surveys):,} survey answers "
            f"in {seconds:.1f} s"
        )
        return {
            "seeded": True,
            "seconds": round(seconds, 1),
            "read_and_built_s": round(built_s, 1),
            "participants": len(rows.participants),
            "payments": len(rows.payments),
            "survey_answers": len(rows.surveys),
            "counts": dict(sorted(rows.counts.items())),
        }
    finally:
        engine.dispose()


def reset_survey(url: str, k: int, wave_id: int = 1) -> int:
    """Removes the wave's answers to survey k and any survey-k payments (an earlier run's)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.begin() as conn:
            gone = conn.execute(
                text(
                    "DELETE FROM survey_response WHERE survey = :k AND registrant_id IN "
                    "(SELECT registrant_id FROM participant WHERE wave_id = :w)"
                ),
                {"k": k, "w": wave_id},
            ).rowcount
            conn.execute(
                text(
                    "DELETE FROM payment WHERE wave_id = :w AND benefit = 'survey' "
                    "AND installment = :k"
                ),
                {"k": k, "w": wave_id},
            )
        return int(gone or 0)
    finally:
        engine.dispose()


def participants(url: str, wave_id: int = 1) -> list[tuple[str, str]]:
    """(NIK, state) of every participant of the wave, in registrant order."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            return [
                (nik, state)
                for nik, state in conn.execute(
                    text(
                        "SELECT nik, state FROM participant WHERE wave_id = :w "
                        "ORDER BY registrant_id"
                    ),
                    {"w": wave_id},
                )
            ]
    finally:
        engine.dispose()


def survey_open(url: str, k: int, wave_id: int = 1) -> list[str]:
    """NIKs whose survey k is OPEN: TRAINED, incentive installment k PAID, not answered."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT p.nik FROM participant p JOIN payment y "
                        "ON y.registrant_id = p.registrant_id AND y.benefit = 'incentive' "
                        "AND y.installment = :k AND y.status = 'PAID' "
                        "WHERE p.wave_id = :w AND p.state IN ('TRAINED', 'COMPLETED') "
                        "AND NOT EXISTS (SELECT 1 FROM survey_response s "
                        "WHERE s.registrant_id = p.registrant_id AND s.survey = :k) "
                        "AND NOT EXISTS (SELECT 1 FROM payment z "
                        "WHERE z.registrant_id = p.registrant_id AND z.benefit = 'survey' "
                        "AND z.installment = :k) "
                        "ORDER BY p.registrant_id"
                    ),
                    {"k": k, "w": wave_id},
                ).scalars()
            )
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--database", required=True, help="SQLAlchemy URL of a drawn wave")
    ap.add_argument("--wave", type=int, default=1)
    ap.add_argument("--seed", default="bench")
    ap.add_argument("--reseed", action="store_true", help="delete and write the rows again")
    args = ap.parse_args()
    print(json.dumps(seed_lifecycle(args.database, args.wave, args.seed, args.reseed)))


if __name__ == "__main__":
    main()
