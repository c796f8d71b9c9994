"""The payout run's steps (lifecycle.md): plain functions of (session factory, partner
clients, the run's as-of date), each writing its results in its own transactions, each
picking up only what is still to do, so that a rerun of the same date resumes.

    enroll              every CREDITED registrant becomes a participant (AWAITING_TRAINING)
    read_feed           one platform's feed from its stored cursor, events and cursor together
    derive_training     what the events say for the not-yet-trained: in training, trained
    revoke              past the deadline, or blacklisted before training: card closed
    make_due            incentive installments and survey payments that fall due by as-of
    recheck             blacklist, excluding agencies and the registry's deceased flag, per payment
    disburse            the checked payments, each under its key, looked up before any resend
    reconcile           the run's payments against each payment partner's statement

Every rule (what counts as a purchase, when an installment is due, why a payment stops)
is rules/lifecycle.py's; this module only reads, asks and stores.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Integer, String, and_, cast, exists, func, literal, or_, select, update

from models.bulk import update_rows
from models.db import SessionFactory
from models.queries import R, utcnow
from models.tables import (
    BlacklistEntry,
    FeedCursor,
    Participant,
    Payment,
    SurveyResponse,
    TrainingEvent,
    Wave,
)
from partners.client import PartnerError, PartnerFailure
from rules import lifecycle as lc
from rules.enums import State
from tasks import audit

P = Participant.__table__  # type: ignore[attr-defined]
E = TrainingEvent.__table__  # type: ignore[attr-defined]
C = FeedCursor.__table__  # type: ignore[attr-defined]
Y = Payment.__table__  # type: ignore[attr-defined]
S = SurveyResponse.__table__  # type: ignore[attr-defined]
W = Wave.__table__  # type: ignore[attr-defined]
B = BlacklistEntry.__table__  # type: ignore[attr-defined]

BATCH = 1000  # people per partner round trip and per transaction
FEED_PAGE = 5000  # events per feed page: one round trip and one transaction each
ENROLL_BATCH = 5000
S_ = lc.LifecycleState


@dataclass
class StageReport:
    """What a stage did: counts by name, and the partners that failed (never a NIK)."""

    stage: str
    counts: Counter = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # partner id -> last error
    pending: int = 0

    def fail(self, failure: PartnerFailure, people: int = 1) -> None:
        self.failures[failure.partner_id] = f"{failure.error_class}: {failure.detail}"
        self.pending += people

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "counts": dict(self.counts),
            "failures": dict(self.failures),
            "pending": self.pending,
        }


def _insert(conn, table):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def lifecycle_settings(wave: Any) -> lc.LifecycleSettings:
    return lc.LifecycleSettings(
        first_training_days=wave.first_training_days,
        incentive_amount=int(wave.incentive_amount),
        incentive_installments=wave.incentive_installments,
        incentive_interval_days=wave.incentive_interval_days,
        survey_amount=int(wave.survey_amount),
        surveys=wave.surveys,
    )


def _wave_settings(session) -> dict[int, lc.LifecycleSettings]:
    return {
        row.wave_id: lifecycle_settings(row)
        for row in session.execute(
            select(
                W.c.wave_id,
                W.c.first_training_days,
                W.c.incentive_amount,
                W.c.incentive_installments,
                W.c.incentive_interval_days,
                W.c.survey_amount,
                W.c.surveys,
            )
        )
    }


# ---------------------------------------------------------------- enroll
def enroll(sessions: SessionFactory, as_of: date) -> StageReport:
    """Every CREDITED registrant (credited on or before as-of) not yet a participant
    becomes one, AWAITING_TRAINING, with its deadline."""
    report = StageReport("enroll")
    cutoff = lc.end_of_day_utc(as_of)
    after = 0
    while True:
        with sessions() as session, session.begin():
            settings = _wave_settings(session)
            amounts = dict(session.execute(select(W.c.wave_id, W.c.training_balance)).all())
            rows = session.execute(
                select(R.c.id, R.c.wave_id, R.c.nik, R.c.card_number, R.c.credited_at)
                .where(
                    R.c.state == State.CREDITED.value,
                    R.c.id > after,
                    R.c.credited_at <= cutoff,
                    ~exists().where(P.c.registrant_id == R.c.id),
                )
                .order_by(R.c.id)
                .limit(ENROLL_BATCH)
            ).all()
            if not rows:
                return report
            now = utcnow()
            values = []
            for r in rows:
                credited_on = lc.wib_date(r.credited_at)
                values.append(
                    {
                        "registrant_id": r.id,
                        "wave_id": r.wave_id,
                        "nik": r.nik,
                        "card_number": r.card_number,
                        "credited_amount": int(amounts[r.wave_id]),
                        "credited_on": credited_on,
                        "deadline_on": lc.deadline(credited_on, settings[r.wave_id]),
                        "state": S_.AWAITING_TRAINING.value,
                        "state_on": credited_on,
                        "balance_left": int(amounts[r.wave_id]),
                        "late_purchase": False,
                        "orphan_completions": 0,
                        "card_used_at_issuer": False,
                        "events_seen": 0,
                        "updated_at": now,
                    }
                )
            session.connection().execute(P.insert(), values)
            report.counts["enrolled"] += len(values)
            after = rows[-1].id


# ---------------------------------------------------------------- the feeds
def read_feed(sessions: SessionFactory, client: Any, page_size: int = FEED_PAGE) -> StageReport:
    """Reads one platform's feed from its stored cursor until it says no more is waiting.
    Each page's new events and the cursor after them are stored in one transaction, so a
    crash between pages re-reads at most one page, and an event id seen before changes
    nothing. Memory: one page."""
    platform = client.settings.id
    report = StageReport("training-events")
    while True:
        with sessions() as session:
            cursor = session.execute(select(C.c.cursor).where(C.c.platform == platform)).scalar()
        try:
            page = client.events(after=cursor, limit=page_size)
        except PartnerError as exc:
            report.fail(exc.failure)
            return report
        now = utcnow()
        with sessions() as session, session.begin():
            conn = session.connection()
            ids = list({e.event_id for e in page.events})
            known: set[str] = set()
            for chunk in _chunks(ids, 900):
                known.update(
                    conn.execute(
                        select(E.c.event_id).where(
                            E.c.platform == platform, E.c.event_id.in_(chunk)
                        )
                    ).scalars()
                )
            fresh: dict[str, dict] = {}
            for e in page.events:
                if e.event_id in known or e.event_id in fresh:
                    report.counts["duplicates"] += 1
                    continue
                fresh[e.event_id] = {
                    "platform": platform,
                    "event_id": e.event_id,
                    "type": e.type,
                    "card_number": e.card_number,
                    "course_id": e.course_id,
                    "price": e.price,
                    "at": lc._naive_utc(e.at),
                    "received_at": now,
                }
            if fresh:
                conn.execute(_insert(conn, E).on_conflict_do_nothing(), list(fresh.values()))
            report.counts["events"] += len(fresh)
            report.counts["unreadable"] += page.unreadable
            stored = conn.execute(select(C.c.platform).where(C.c.platform == platform)).first()
            dup = len(page.events) - len(fresh)
            if stored is None:
                conn.execute(
                    C.insert(),
                    [
                        {
                            "platform": platform,
                            "cursor": page.next,
                            "events": len(fresh),
                            "duplicates": dup,
                            "unreadable": page.unreadable,
                            "updated_at": now,
                        }
                    ],
                )
            else:
                conn.execute(
                    update(C)
                    .where(C.c.platform == platform)
                    .values(
                        cursor=page.next,
                        events=C.c.events + len(fresh),
                        duplicates=C.c.duplicates + dup,
                        unreadable=C.c.unreadable + page.unreadable,
                        updated_at=now,
                    )
                )
        if not page.more or (not page.events and page.next == cursor):
            return report


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _events_of(conn, cards: Sequence[str]) -> dict[str, list[lc.Event]]:
    events: dict[str, list[lc.Event]] = defaultdict(list)
    for chunk in _chunks(list(cards), 900):
        for row in conn.execute(
            select(E.c.card_number, E.c.event_id, E.c.type, E.c.course_id, E.c.price, E.c.at).where(
                E.c.card_number.in_(chunk)
            )
        ):
            events[row.card_number].append(
                lc.Event(row.event_id, row.type, row.course_id, row.price, row.at)
            )
    return events


def derive_training(sessions: SessionFactory, as_of: date) -> StageReport:
    """The not-yet-trained participants' states from their events up to the end of as-of."""
    report = StageReport("training-events")
    after = 0
    open_states = [S_.AWAITING_TRAINING.value, S_.IN_TRAINING.value]
    while True:
        with sessions() as session, session.begin():
            conn = session.connection()
            rows = conn.execute(
                select(P)
                .where(P.c.state.in_(open_states), P.c.registrant_id > after)
                .order_by(P.c.registrant_id)
                .limit(ENROLL_BATCH)
            ).all()
            if not rows:
                return report
            after = rows[-1].registrant_id
            events = _events_of(conn, [r.card_number for r in rows])
            changes = []
            for r in rows:
                mine = events.get(r.card_number, [])
                view = lc.training_view(
                    mine, credited=int(r.credited_amount), deadline_on=r.deadline_on, as_of=as_of
                )
                state_on = r.state_on
                if view.state != r.state:
                    report.counts[f"to_{view.state.value.lower()}"] += 1
                    if view.state == S_.TRAINED:
                        state_on = view.first_completion_on
                    elif view.state == S_.IN_TRAINING:
                        state_on = view.first_purchase_on
                    else:
                        state_on = r.credited_on
                new = (
                    view.state.value,
                    state_on,
                    view.first_purchase_on,
                    view.first_completion_on,
                    view.balance_left,
                    view.late_purchase,
                    view.orphan_completions,
                    len(mine),
                )
                old = (
                    r.state,
                    r.state_on,
                    r.first_purchase_on,
                    r.first_completion_on,
                    int(r.balance_left),
                    bool(r.late_purchase),
                    r.orphan_completions,
                    r.events_seen,
                )
                if new != old:
                    changes.append((*new, r.registrant_id))
            update_rows(
                conn,
                P,
                (
                    "state",
                    "state_on",
                    "first_purchase_on",
                    "first_completion_on",
                    "balance_left",
                    "late_purchase",
                    "orphan_completions",
                    "events_seen",
                ),
                changes,
                key="registrant_id",
            )


# ---------------------------------------------------------------- revocation
def revoke(sessions: SessionFactory, issuer: Any, as_of: date) -> StageReport:
    """Closes the cards of the participants revoked on as-of (lifecycle.md, "Revocation")."""
    report = StageReport("revocation")
    blacklisted = exists().where(B.c.nik == P.c.nik)
    candidates = or_(
        and_(P.c.state == S_.AWAITING_TRAINING.value, P.c.deadline_on < as_of),
        and_(P.c.state.in_([S_.AWAITING_TRAINING.value, S_.IN_TRAINING.value]), blacklisted),
    )
    after = 0
    reference = lc.revoke_reference(as_of)
    while True:
        with sessions() as session, session.begin():
            conn = session.connection()
            rows = conn.execute(
                select(
                    P.c.registrant_id,
                    P.c.wave_id,
                    P.c.nik,
                    P.c.card_number,
                    P.c.state,
                    P.c.deadline_on,
                    P.c.revoke_status,
                    P.c.revoke_reason,
                    blacklisted.label("listed"),
                )
                .where(
                    candidates,
                    P.c.registrant_id > after,
                    or_(P.c.revoke_status.is_(None), P.c.revoke_status != "CONFLICT"),
                )
                .order_by(P.c.registrant_id)
                .limit(BATCH)
            ).all()
            if not rows:
                return report
            after = rows[-1].registrant_id
            asks = []
            for r in rows:
                reason = lc.revocation_reason(r.state, r.deadline_on, as_of, bool(r.listed))
                if reason is None:
                    continue
                if r.revoke_status == "SENDING" and r.revoke_reason:
                    reason = lc.RevokeReason(r.revoke_reason)  # the key's first body, again
                asks.append((r, reason))
            # Written before the issuer is asked: a crash leaves SENDING, asked again.
            update_rows(
                conn,
                P,
                ("revoke_status", "revoke_reason"),
                [("SENDING", reason.value, r.registrant_id) for r, reason in asks],
                key="registrant_id",
            )
        if not asks:
            continue
        keys = {lc.revoke_key(r.wave_id, r.nik): (r, reason) for r, reason in asks}
        results = issuer.revoke(
            [
                {
                    "idempotency_key": key,
                    "card_number": r.card_number,
                    "reason": reason.value,
                    "reference": reference,
                }
                for key, (r, reason) in keys.items()
            ]
        )
        revoked, used, conflict, failed = [], [], [], []
        for key, (r, reason) in keys.items():
            result = results.get(key)
            if result is None or isinstance(result, PartnerFailure):
                if isinstance(result, PartnerFailure):
                    report.fail(result)
                    failed.append((f"{result.error_class}", r.registrant_id))
                continue
            if result.status == "REVOKED":
                revoked.append(
                    (
                        S_.REVOKED.value,
                        reason.value,
                        as_of,
                        "REVOKED",
                        int(result.amount_returned or 0),
                        as_of,
                        None,
                        r.registrant_id,
                    )
                )
                report.counts[f"revoked_{reason.value.lower()}"] += 1
                report.counts["rupiah_returned"] += int(result.amount_returned or 0)
            elif result.status == "CARD_USED":
                used.append(("CARD_USED", True, r.registrant_id))
                report.counts["card_used_at_issuer"] += 1
            else:
                conflict.append(("CONFLICT", r.registrant_id))
                report.counts["conflict"] += 1
        with sessions() as session, session.begin():
            conn = session.connection()
            update_rows(
                conn,
                P,
                (
                    "state",
                    "reason",
                    "state_on",
                    "revoke_status",
                    "amount_returned",
                    "revoked_on",
                    "revoke_error",
                ),
                revoked,
                key="registrant_id",
            )
            update_rows(
                conn, P, ("revoke_status", "card_used_at_issuer"), used, key="registrant_id"
            )
            update_rows(conn, P, ("revoke_status",), conflict, key="registrant_id")
            update_rows(conn, P, ("revoke_error",), failed, key="registrant_id")
            if revoked or used or conflict:
                # Every revocation batch in the audit trail, with the action it records.
                audit.append(
                    session,
                    audit.Actor.here(),
                    "payout.revocation",
                    after={
                        "as_of": as_of.isoformat(),
                        "revoked": len(revoked),
                        "rupiah_returned": sum(row[4] for row in revoked),
                        "card_used_at_issuer": len(used),
                        "conflict": len(conflict),
                    },
                )


# ---------------------------------------------------------------- what falls due
def _due_on_sql(conn, column, days: int):
    if conn.dialect.name == "postgresql":
        return column + days
    return func.date(column, f"+{int(days)} days")


def _key_sql(benefit: str, installment: int):
    return (
        literal("w")
        + cast(P.c.wave_id, String)
        + literal(":")
        + P.c.nik
        + literal(f":{benefit}:{installment}")
    )


def make_due(sessions: SessionFactory, as_of: date) -> StageReport:
    """Writes a ledger row for every incentive installment and survey payment that falls
    due by as-of and has none: DUE, or STOPPED (with the participant's reason) for a
    stopped participant. A person's installment already live in another wave is skipped
    (the database's paid-once index)."""
    report = StageReport("due")
    now = utcnow()
    with sessions() as session, session.begin():
        conn = session.connection()
        settings = _wave_settings(session)
        for wave_id, ls in settings.items():
            for k in range(1, ls.incentive_installments + 1):
                cutoff = lc.installment_cutoff(as_of, k, ls.incentive_interval_days)
                days = (k - 1) * ls.incentive_interval_days
                _insert_due(
                    conn,
                    report,
                    wave_id,
                    lc.Benefit.INCENTIVE.value,
                    k,
                    ls.incentive_amount,
                    _due_on_sql(conn, P.c.first_completion_on, days),
                    [
                        P.c.state.in_([S_.TRAINED.value, S_.STOPPED.value, S_.COMPLETED.value]),
                        P.c.first_completion_on.is_not(None),
                        P.c.first_completion_on <= cutoff,
                    ],
                    now,
                )
            cutoff_at = lc.end_of_day_utc(as_of)
            for k in range(1, ls.surveys + 1):
                answered = exists().where(
                    S.c.registrant_id == P.c.registrant_id,
                    S.c.survey == k,
                    S.c.answered_at <= cutoff_at,
                )
                _insert_due(
                    conn,
                    report,
                    wave_id,
                    lc.Benefit.SURVEY.value,
                    k,
                    ls.survey_amount,
                    literal(as_of),
                    [
                        P.c.state.in_([S_.TRAINED.value, S_.STOPPED.value, S_.COMPLETED.value]),
                        answered,
                    ],
                    now,
                )
        # Up to a million new rows: without fresh statistics SQLite plans the re-check's
        # per-person statements on ix_payment_status, every DUE payment per person
        # (quadratic: 20,000 participants' re-check took 289 s, 18 s with them).
        conn.exec_driver_sql("ANALYZE payment")
    return report


def _insert_due(conn, report, wave_id, benefit, k, amount, due_on, conditions, now) -> None:
    stopped = P.c.state == S_.STOPPED.value
    from sqlalchemy import case

    source = (
        select(
            P.c.wave_id,
            P.c.registrant_id,
            P.c.nik,
            literal(benefit).label("benefit"),
            literal(k, Integer).label("installment"),
            literal(int(amount)).label("amount"),
            due_on.label("due_on"),
            _key_sql(benefit, k).label("idempotency_key"),
            R.c.payout_provider,
            R.c.payout_account,
            case((stopped, literal("STOPPED")), else_=literal("DUE")).label("status"),
            case((stopped, P.c.reason), else_=None).label("reason"),
            literal(0).label("attempts"),
            literal(now).label("created_at"),
            literal(now).label("updated_at"),
        )
        .select_from(P.join(R, R.c.id == P.c.registrant_id))
        .where(
            P.c.wave_id == wave_id,
            *conditions,
            ~exists().where(
                Y.c.wave_id == P.c.wave_id,
                Y.c.nik == P.c.nik,
                Y.c.benefit == benefit,
                Y.c.installment == k,
            ),
        )
    )
    columns = [
        "wave_id",
        "registrant_id",
        "nik",
        "benefit",
        "installment",
        "amount",
        "due_on",
        "idempotency_key",
        "provider",
        "account",
        "status",
        "reason",
        "attempts",
        "created_at",
        "updated_at",
    ]
    statement = _insert(conn, Y).from_select(columns, source).on_conflict_do_nothing()
    written = conn.execute(statement).rowcount
    if written and written > 0:
        report.counts[f"{benefit}_{k}"] += written


# ---------------------------------------------------------------- re-checks
def _to_check(conn, as_of: date, after: int) -> list:
    return conn.execute(
        select(P.c.registrant_id, P.c.nik, R.c.full_name, R.c.birth_date, R.c.kk_number)
        .select_from(P.join(R, R.c.id == P.c.registrant_id))
        .where(
            P.c.registrant_id > after,
            exists().where(
                Y.c.registrant_id == P.c.registrant_id,
                Y.c.status == lc.PaymentStatus.DUE.value,
                Y.c.due_on <= as_of,
                or_(Y.c.checked_on.is_(None), Y.c.checked_on != as_of),
            ),
        )
        .order_by(P.c.registrant_id)
        .limit(BATCH)
    ).all()


def recheck(sessions: SessionFactory, partners: Any, as_of: date) -> StageReport:
    """Checks everyone about to be paid, within this run: the program's blacklist, every
    agency whose effect is `exclude`, the registry's deceased flag. A listed participant's
    due payments (and every later one) are STOPPED; a partner that fails leaves theirs
    pending, never paid unchecked, never stopped for an outage."""
    report = StageReport("recheck")
    excluding = [a for a in partners.agencies if a.settings.effect == "exclude"]
    after = 0
    while True:
        with sessions() as session:
            people = _to_check(session.connection(), as_of, after)
            if not people:
                return report
            after = people[-1].registrant_id
            listed_niks = set(
                session.execute(
                    select(B.c.nik).where(B.c.nik.in_([p.nik for p in people]))
                ).scalars()
            )
        refs = {str(p.registrant_id): p for p in people}
        failed: dict[str, str] = {}
        excluded: dict[str, list[str]] = defaultdict(list)
        checks: dict[str, dict] = defaultdict(dict)
        records = [{"ref": ref, "nik": p.nik} for ref, p in refs.items()]
        # Every excluding agency and the registry at once: each answers for its own list.
        with ThreadPoolExecutor(len(excluding) + 1) as pool:
            asked = {a.settings.id: pool.submit(a.check, records) for a in excluding}
            identity_asked = pool.submit(
                partners.registry.verify,
                [
                    {
                        "ref": ref,
                        "nik": p.nik,
                        "full_name": p.full_name or "",
                        "birth_date": p.birth_date.isoformat() if p.birth_date else "",
                        "kk_number": p.kk_number or "",
                    }
                    for ref, p in refs.items()
                ],
            )
        for agency in excluding:
            answers = asked[agency.settings.id].result()
            for ref in refs:
                answer = answers.get(ref)
                if isinstance(answer, PartnerFailure) or answer is None:
                    if isinstance(answer, PartnerFailure):
                        report.fail(answer, 0)
                    failed[ref] = f"{agency.settings.id}: unanswered"
                    continue
                checks[ref][agency.settings.id] = bool(answer)
                if answer:
                    excluded[ref].append(agency.settings.category)
        identity = identity_asked.result()
        deceased: dict[str, bool] = {}
        for ref in refs:
            answer = identity.get(ref)
            if isinstance(answer, PartnerFailure) or answer is None:
                if isinstance(answer, PartnerFailure):
                    report.fail(answer, 0)
                failed[ref] = f"{partners.registry.settings.id}: unanswered"
                continue
            deceased[ref] = bool(answer.found and answer.deceased)
            checks[ref]["registry_deceased"] = deceased[ref]
        now = utcnow()
        with sessions() as session, session.begin():
            conn = session.connection()
            for ref, p in refs.items():
                blacklisted = p.nik in listed_niks
                checks[ref]["blacklist"] = blacklisted
                reason = lc.recheck_reason(
                    blacklisted, excluded.get(ref, []), deceased.get(ref, False)
                )
                if reason is None and ref in failed:
                    report.pending += 1
                    conn.execute(
                        update(Y)
                        .where(Y.c.registrant_id == p.registrant_id, Y.c.status == "DUE")
                        .values(last_error=failed[ref], updated_at=now)
                    )
                    continue
                if reason is not None:
                    _stop(conn, p.registrant_id, reason, as_of, checks[ref], now)
                    report.counts[f"stopped_{reason.lower()}"] += 1
                    continue
                written = conn.execute(
                    update(Y)
                    .where(
                        Y.c.registrant_id == p.registrant_id,
                        Y.c.status == "DUE",
                        Y.c.due_on <= as_of,
                    )
                    .values(
                        checked_on=as_of,
                        checks_json=json.dumps(checks[ref], sort_keys=True),
                        last_error=None,
                        updated_at=now,
                    )
                ).rowcount
                report.counts["checked"] += written


def _stop(conn, registrant_id: int, reason: str, as_of: date, checks: dict, now) -> None:
    conn.execute(
        update(Y)
        .where(Y.c.registrant_id == registrant_id, Y.c.status == "DUE")
        .values(
            status=lc.PaymentStatus.STOPPED.value,
            reason=reason,
            run_as_of=as_of,
            checks_json=json.dumps(checks, sort_keys=True),
            updated_at=now,
        )
    )
    conn.execute(
        update(P)
        .where(P.c.registrant_id == registrant_id)
        .values(state=S_.STOPPED.value, reason=reason, state_on=as_of, updated_at=now)
    )


# ---------------------------------------------------------------- sign-off's view
def to_disburse(session, as_of: date) -> dict[str, Any]:
    """What the run is about to pay, as an approver sees it: count and rupiah by benefit
    and a digest over the sorted (NIK, benefit, installment, amount) list."""
    h = hashlib.sha256()
    by_benefit: Counter = Counter()
    rupiah: Counter = Counter()
    for row in session.execute(
        select(Y.c.nik, Y.c.benefit, Y.c.installment, Y.c.amount)
        .where(
            Y.c.status.in_([lc.PaymentStatus.DUE.value, lc.PaymentStatus.SENDING.value]),
            Y.c.due_on <= as_of,
            or_(Y.c.checked_on == as_of, Y.c.status == lc.PaymentStatus.SENDING.value),
        )
        .order_by(Y.c.nik, Y.c.benefit, Y.c.installment)
    ):
        h.update(f"{row.nik}|{row.benefit}|{row.installment}|{int(row.amount)}\n".encode())
        by_benefit[row.benefit] += 1
        rupiah[row.benefit] += int(row.amount)
    return {
        "as_of": as_of.isoformat(),
        "payments": sum(by_benefit.values()),
        "total_amount": sum(rupiah.values()),
        "by_benefit": {
            b: {"count": by_benefit[b], "amount": rupiah[b]} for b in sorted(by_benefit)
        },
        "digest": h.hexdigest(),
    }


# ---------------------------------------------------------------- disbursement
def disburse(sessions: SessionFactory, payments: dict[str, Any], as_of: date) -> StageReport:
    """Pays the checked payments: a payment SENDING from before (a lost answer, a crash) is
    looked up first and sent again under the same key only if the partner never got it;
    then each checked DUE payment is marked SENDING (committed) and sent."""
    report = StageReport("disburse")
    reference = lc.payout_reference(as_of)
    # 1. What may already have moved (a lost answer, a crash): looked up first.
    _settle_sending(sessions, payments, reference, as_of, report)
    # 2. The checked, due payments.
    after = 0
    while True:
        now = utcnow()
        with sessions() as session, session.begin():
            conn = session.connection()
            rows = conn.execute(
                select(Y)
                .where(
                    Y.c.status == lc.PaymentStatus.DUE.value,
                    Y.c.checked_on == as_of,
                    Y.c.due_on <= as_of,
                    Y.c.id > after,
                )
                .order_by(Y.c.id)
                .limit(BATCH)
            ).all()
            if not rows:
                break
            after = rows[-1].id
            # Written before the partner is called: possibly paid from here on.
            conn.execute(
                update(Y)
                .where(Y.c.id.in_([r.id for r in rows]), Y.c.status == "DUE")
                .values(status="SENDING", reference=reference, updated_at=now)
            )
        _send(sessions, payments, rows, reference, as_of, report)
    # 3. Answers still missing after the calls' own retries: looked up before any resend.
    _settle_sending(sessions, payments, reference, as_of, report)
    return report


def _settle_sending(sessions, payments, reference: str, as_of: date, report: StageReport) -> None:
    """Every SENDING payment looked up by its key: the partner's answer settles it; a key
    the partner never received is sent again (the same key); a lookup that fails leaves it
    SENDING (pending), never sent again blind."""
    after = 0
    while True:
        with sessions() as session:
            rows = session.execute(
                select(Y)
                .where(Y.c.status == lc.PaymentStatus.SENDING.value, Y.c.id > after)
                .order_by(Y.c.id)
                .limit(BATCH)
            ).all()
        if not rows:
            return
        after = rows[-1].id
        resend = []
        settled: dict[int, Any] = {}
        for row in rows:
            client = payments.get(row.provider or "")
            if client is None:
                continue
            found = client.lookup_disbursement(row.idempotency_key)
            if isinstance(found, PartnerFailure):
                report.fail(found)
            elif found is None:
                resend.append(row)
            else:
                settled[row.id] = found
                report.counts["looked_up"] += 1
        _apply(sessions, rows, settled, as_of, report)
        _send(sessions, payments, resend, reference, as_of, report)


def _send(sessions, payments, rows, reference: str, as_of: date, report: StageReport) -> None:
    by_provider: dict[str, list] = defaultdict(list)
    for row in rows:
        by_provider[row.provider or ""].append(row)
    known = {p: rows for p, rows in by_provider.items() if p in payments}
    for provider, mine in by_provider.items():
        if provider not in known:
            report.counts["no_payment_partner"] += len(mine)
    # Each payment partner at once, each within its own limits; each its own report
    # (merged here: counters are not shared between threads).
    parts = {p: StageReport(report.stage) for p in known}
    with ThreadPoolExecutor(max(1, len(known))) as pool:
        for done in [
            pool.submit(_send_one, sessions, payments[p], rows, reference, as_of, parts[p])
            for p, rows in known.items()
        ]:
            done.result()
    for part in parts.values():
        report.counts.update(part.counts)
        report.failures.update(part.failures)
        report.pending += part.pending


def _send_one(sessions, client, mine, reference: str, as_of: date, report: StageReport) -> None:
    results = client.disburse(
        [
            {
                "idempotency_key": r.idempotency_key,
                "account": r.account,
                "nik": r.nik,
                "amount": int(r.amount),
                "currency": "IDR",
                "reference": r.reference or reference,
            }
            for r in mine
        ]
    )
    settled: dict[int, Any] = {}
    failures: list[tuple[str, int]] = []
    for r in mine:
        result = results.get(r.idempotency_key)
        if isinstance(result, PartnerFailure):
            report.fail(result)
            failures.append((f"{result.error_class}: {result.detail}"[:200], r.id))
        elif result is not None:
            settled[r.id] = result
    _apply(sessions, mine, settled, as_of, report)
    with sessions() as session, session.begin():
        conn = session.connection()
        update_rows(conn, Y, ("last_error",), failures)
        conn.execute(
            update(Y).where(Y.c.id.in_([r.id for r in mine])).values(attempts=Y.c.attempts + 1)
        )


def _apply(sessions, rows, settled: dict[int, Any], as_of: date, report: StageReport) -> None:
    now = utcnow()
    paid, failed, conflict = [], [], []
    for row in rows:
        result = settled.get(row.id)
        if result is None:
            continue
        if result.status == "COMPLETED":
            paid.append(("PAID", result.transfer_id, as_of, now, row.id))
            report.counts[f"paid_{row.benefit}"] += 1
            report.counts[f"rupiah_{row.benefit}"] += int(row.amount)
        elif result.status == "FAILED":
            failed.append(("FAILED", result.reason, as_of, now, row.id))
            report.counts[f"failed_{(result.reason or 'unknown').lower()}"] += 1
        else:
            conflict.append(("CONFLICT", "CONFLICT", as_of, now, row.id))
            report.counts["conflict"] += 1
    with sessions() as session, session.begin():
        conn = session.connection()
        update_rows(conn, Y, ("status", "transfer_id", "run_as_of", "updated_at"), paid)
        update_rows(conn, Y, ("status", "reason", "run_as_of", "updated_at"), failed)
        update_rows(conn, Y, ("status", "reason", "run_as_of", "updated_at"), conflict)


def complete_participants(sessions: SessionFactory, as_of: date) -> int:
    """TRAINED participants whose every installment is paid or failed become COMPLETED."""
    done = 0
    with sessions() as session, session.begin():
        conn = session.connection()
        for wave_id, ls in _wave_settings(session).items():
            settled = (
                select(func.count())
                .where(
                    Y.c.registrant_id == P.c.registrant_id,
                    Y.c.benefit == lc.Benefit.INCENTIVE.value,
                    Y.c.status.in_([lc.PaymentStatus.PAID.value, lc.PaymentStatus.FAILED.value]),
                )
                .scalar_subquery()
            )
            done += conn.execute(
                update(P)
                .where(
                    P.c.wave_id == wave_id,
                    P.c.state == S_.TRAINED.value,
                    settled >= ls.incentive_installments,
                )
                .values(state=S_.COMPLETED.value, state_on=as_of, updated_at=utcnow())
            ).rowcount
    return done


# ---------------------------------------------------------------- reconciliation
def reconcile(sessions: SessionFactory, payments: dict[str, Any], as_of: date) -> dict[str, Any]:
    """The run's paid payments against each payment partner's statement of its reference."""
    reference = lc.payout_reference(as_of)
    with sessions() as session:
        paid = session.execute(
            select(Y.c.provider, Y.c.idempotency_key, Y.c.amount).where(
                Y.c.reference == reference, Y.c.status == lc.PaymentStatus.PAID.value
            )
        ).all()
    ledger: dict[str, dict[str, int]] = defaultdict(dict)
    for row in paid:
        ledger[row.provider or ""][row.idempotency_key] = int(row.amount)
    partners_out = {}
    ok = True
    for provider, client in sorted(payments.items()):
        mine = ledger.get(provider, {})
        seen: Counter = Counter()
        count = amount = unknown = mismatched = duplicated = 0
        error = None
        try:
            for entry in client.statement(reference):
                count += 1
                amount += entry.amount
                seen[entry.idempotency_key] += 1
                if entry.idempotency_key not in mine:
                    unknown += 1
                elif seen[entry.idempotency_key] > 1:
                    duplicated += 1
                elif mine[entry.idempotency_key] != entry.amount:
                    mismatched += 1
        except PartnerError as exc:
            error = f"{exc.failure.partner_id}: {exc.failure.error_class}"
        missing = sum(1 for key in mine if key not in seen)
        fine = error is None and not (missing or unknown or mismatched or duplicated)
        fine = fine and amount == sum(mine.values())
        ok = ok and fine
        partners_out[provider] = {
            "ledger_count": len(mine),
            "ledger_amount": sum(mine.values()),
            "statement_count": None if error else count,
            "statement_amount": None if error else amount,
            "missing_in_statement": None if error else missing,
            "unknown_in_statement": None if error else unknown,
            "amount_mismatches": None if error else mismatched,
            "duplicates_in_statement": None if error else duplicated,
            "statement_error": error,
            "ok": fine,
        }
    return {
        "as_of": as_of.isoformat(),
        "reference": reference,
        "ledger_count": sum(len(v) for v in ledger.values()),
        "ledger_amount": sum(sum(v.values()) for v in ledger.values()),
        "partners": partners_out,
        "ok": ok,
    }


__all__ = [
    "StageReport",
    "complete_participants",
    "derive_training",
    "disburse",
    "enroll",
    "make_due",
    "read_feed",
    "recheck",
    "reconcile",
    "revoke",
    "to_disburse",
]
