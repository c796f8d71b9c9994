"""Paid once in the program (wave-rules.md), in the database and at each point where a seat
is given or money moves: the draw, a backfill round or quota raise, the account check and
the credit. A NIK confirmed or credited in another wave (whatever its number) is rejected
with PRIOR_RECIPIENT and the seat goes to the next in line; the ledger holds at most one
pending or applied credit per (NIK, benefit), whatever the wave."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from sqlalchemy import insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from models.db import init_db
from models.schema import SchemaOutdatedError, upgrade_database
from models.tables import LedgerEntry, Registrant
from partners.issuer import CreditResult, StatementEntry
from readmodels.reporting import reconcile
from rules.draw import draw_key
from tasks.accounts import verify_accounts_batch
from tasks.draw import draw_participants, fill_free_seats, free_seats, raise_quota
from tasks.rollout import credit_training_balance_batch
from tests.tasks.factories import make_wave

SEED = "seed"
R = Registrant.__table__
L = LedgerEntry.__table__
NOW = datetime(2026, 11, 28, 12, 0)
INDEX = "uq_ledger_live_credit"


def nik(i: int) -> str:
    return f"31710101900{i:05d}"


def add(sessions, wave_id: int, niks: list[str], state: str = "ELIGIBLE", **values) -> None:
    with sessions() as session, session.begin():
        first = session.execute(
            text("SELECT coalesce(max(line), 1) FROM registrant WHERE wave_id = :w"),
            {"w": wave_id},
        ).scalar_one()
        session.connection().execute(
            insert(R),
            [
                {
                    "wave_id": wave_id,
                    "line": first + 1 + i,
                    "nik": n,
                    "kk_number": f"kk-{n}",
                    "province": "31",
                    "priority": False,
                    "state": state,
                    "draw_key": draw_key(SEED, n),
                    "phone": "+6281200000000",
                    "payout_provider": "wallet-a",
                    "payout_account": "1",
                    **values,
                }
                for i, n in enumerate(niks)
            ],
        )


def in_order(niks: list[str]) -> list[str]:
    return sorted(niks, key=lambda n: draw_key(SEED, n))


def states(sessions, wave_id: int) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        return {
            n: (s, r)
            for n, s, r in session.execute(
                select(R.c.nik, R.c.state, R.c.reason).where(R.c.wave_id == wave_id)
            )
        }


def set_state(sessions, wave_id: int, niks: list[str], state: str, **values) -> None:
    with sessions() as session, session.begin():
        session.execute(
            update(R).where(R.c.wave_id == wave_id, R.c.nik.in_(niks)).values(state=state, **values)
        )


def ids(sessions, wave_id: int) -> tuple[int, int]:
    with sessions() as session:
        got = session.execute(select(R.c.id).where(R.c.wave_id == wave_id)).scalars().all()
    return min(got), max(got)


def ledger_row(wave_id: int, n: str, status: str = "PENDING", benefit: str = "training") -> dict:
    return {
        "wave_id": wave_id,
        "nik": n,
        "benefit": benefit,
        "idempotency_key": f"w{wave_id}:{n}:{benefit}",
        "card_number": f"50490000000{wave_id:04d}{n[-1]}",
        "amount": 1_000_000,
        "status": status,
        "attempts": 0,
        "created_at": NOW,
        "updated_at": NOW,
    }


def add_ledger(sessions, *rows: dict) -> None:
    with sessions() as session, session.begin():
        session.connection().execute(insert(L), list(rows))


def drop_live_credit_index(sessions) -> None:
    """A database of a release before the rule and before schema revisions (the index is
    what `prakerja db upgrade` must add)."""
    with sessions() as session, session.begin():
        session.execute(text(f"DROP INDEX IF EXISTS {INDEX}"))
        session.execute(text("DROP TABLE prakerja_schema_version"))
        # ... and before what later revisions added (issue 13's sign-off and audit).
        session.execute(text("DROP TABLE audit"))
        session.execute(text("DROP TABLE sign_off"))
        session.execute(text("ALTER TABLE wave DROP COLUMN sign_off"))
        session.execute(text("DROP INDEX ix_registrant_wave_state_reason"))
        session.execute(text("DROP INDEX ix_registrant_pending"))
        session.execute(text("DROP INDEX ix_registrant_waitlist"))  # ... and issue 19's
        # ... and before lifecycle.md's tables and settings (issue 20).
        # ... and before the dashboard's hardening (issue 21, migration 0007).
        for index in (
            "ix_portal_session_last_seen",
            "ix_login_guard_updated_at",
        ):
            session.execute(text(f"DROP INDEX {index}"))
        for table in (
            "portal_secret",
            "portal_guess_minute",
            "portal_alert",
            "payout_sign_off",
            "payout_lease",
            "payout_run",
            "survey_response",
            "payment",
            "feed_cursor",
            "training_event",
            "participant",
        ):
            session.execute(text(f"DROP TABLE {table}"))
        for column in (
            "first_training_days",
            "incentive_amount",
            "incentive_installments",
            "incentive_interval_days",
            "survey_amount",
            "surveys",
        ):
            session.execute(text(f"ALTER TABLE wave DROP COLUMN {column}"))
        old = "CREATE INDEX ix_registrant_wave_state ON registrant (wave_id, state)"
        session.execute(text(old))


def has_index(engine) -> bool:
    return INDEX in {i["name"] for i in inspect(engine).get_indexes("ledger")}


# ---------------------------------------------------------------- the database
def test_the_database_refuses_a_second_live_credit_for_a_nik_whatever_the_wave(sessions):
    for wave_id in (1, 2, 3):
        make_wave(sessions, wave_id=wave_id)
    add_ledger(sessions, ledger_row(1, nik(1), "PENDING"))
    for status in ("PENDING", "APPLIED"):
        with pytest.raises(IntegrityError):
            add_ledger(sessions, ledger_row(2, nik(1), status))
    add_ledger(sessions, ledger_row(1, nik(2), "APPLIED"))
    with pytest.raises(IntegrityError):
        add_ledger(sessions, ledger_row(3, nik(2), "PENDING"))
    # A credit the issuer refused is no credit: another wave may credit the NIK.
    add_ledger(sessions, ledger_row(1, nik(3), "REJECTED"), ledger_row(2, nik(3), "PENDING"))
    # ... but a refused credit cannot come back to life beside a live one.
    with pytest.raises(IntegrityError), sessions() as session, session.begin():
        session.execute(
            update(L).where(L.c.wave_id == 1, L.c.nik == nik(3)).values(status="PENDING")
        )
    # Another benefit is another credit.
    add_ledger(sessions, ledger_row(2, nik(1), "PENDING", benefit="incentive"))


def test_the_upgrade_adds_the_index_to_an_older_database_once_even_from_many_at_once(
    sessions,
):
    from runtime.app import get_runtime

    engine = get_runtime().engine
    make_wave(sessions, wave_id=1)
    make_wave(sessions, wave_id=2)
    drop_live_credit_index(sessions)
    assert not has_index(engine)
    with pytest.raises(SchemaOutdatedError, match="prakerja db upgrade"):
        init_db(engine)  # no command runs on it before the upgrade
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            upgrade_database(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert has_index(engine)
    init_db(engine)  # now it opens
    assert not upgrade_database(engine).changed  # idempotent
    add_ledger(sessions, ledger_row(1, nik(1)))
    with pytest.raises(IntegrityError):
        add_ledger(sessions, ledger_row(2, nik(1)))


def test_a_database_that_already_paid_someone_twice_still_upgrades_and_reconciliation_says_so(
    sessions, caplog
):
    from runtime.app import get_runtime

    engine = get_runtime().engine
    make_wave(sessions, wave_id=1)
    make_wave(sessions, wave_id=2)
    drop_live_credit_index(sessions)
    add_ledger(sessions, ledger_row(1, nik(1), "APPLIED"), ledger_row(2, nik(1), "APPLIED"))
    add(sessions, 1, [nik(1)], "CREDITED", draw_round=0)
    upgrade_database(engine)  # does not fail: the program keeps working, and says why
    init_db(engine)
    assert not has_index(engine)
    assert INDEX in caplog.text and nik(1) not in caplog.text

    class Issuer:
        def statement(self, reference):
            yield StatementEntry("t-1", f"w1:{nik(1)}:training", "5049", 1_000_000)

    result = reconcile(sessions, Issuer(), 1)
    assert result["paid_more_than_once_in_program"] == 1
    assert not result["ok"]


# ---------------------------------------------------------------- seats
def test_the_draw_passes_over_another_waves_participants_whatever_its_number(sessions):
    people = in_order([nik(i) for i in range(10)])
    make_wave(sessions, wave_id=1, quota=3, lottery_seed=SEED)
    make_wave(sessions, wave_id=2, quota=3, lottery_seed=SEED)
    add(sessions, 1, people)
    # Wave 2 (a higher number) already confirmed the first in line, credited the third.
    add(sessions, 2, [people[0]], "CONFIRMED", draw_round=0)
    add(sessions, 2, [people[2]], "CREDITED", draw_round=0)
    result = draw_participants(sessions, 1)
    got = states(sessions, 1)
    assert got[people[0]] == got[people[2]] == ("REJECTED", "PRIOR_RECIPIENT")
    assert [got[n] for n in (people[1], people[3], people[4])] == [("SELECTED", None)] * 3
    assert got[people[5]] == ("WAITLISTED", None)
    assert result["pool_size"] == 8


def test_a_backfill_round_and_a_quota_raise_pass_over_another_waves_participants(sessions):
    people = in_order([nik(i) for i in range(12)])
    make_wave(sessions, wave_id=1, quota=2, lottery_seed=SEED)
    make_wave(sessions, wave_id=2, quota=5, lottery_seed=SEED)
    add(sessions, 1, people)
    draw_participants(sessions, 1)
    set_state(sessions, 1, people[:2], "CONFIRMED")
    # Meanwhile wave 2 takes the head of wave 1's waitlist.
    add(sessions, 2, people[2:5], "CREDITED", draw_round=0)
    raise_quota(sessions, 1, 4)
    assert fill_free_seats(sessions, 1)["selected"] == 2
    got = states(sessions, 1)
    assert [got[n] for n in people[2:5]] == [("REJECTED", "PRIOR_RECIPIENT")] * 3
    assert [got[n][0] for n in people[5:8]] == ["SELECTED", "SELECTED", "WAITLISTED"]


def test_the_account_check_rejects_another_waves_participant_and_frees_the_seat(sessions):
    people = in_order([nik(i) for i in range(6)])
    make_wave(sessions, wave_id=1, quota=2, lottery_seed=SEED)
    make_wave(sessions, wave_id=2, quota=2, lottery_seed=SEED)
    add(sessions, 1, people)
    draw_participants(sessions, 1)
    # Wave 2 confirmed the first of wave 1's selected after wave 1's draw.
    add(sessions, 2, [people[0]], "CONFIRMED", draw_round=0)
    asked: list[str] = []

    class Payments:
        def verify(self, records):
            asked.extend(r["nik"] for r in records)
            return {r["ref"]: "VERIFIED" for r in records}

    report = verify_accounts_batch(sessions, {"wallet-a": Payments()}, 1, ids(sessions, 1))
    assert asked == [people[1]]  # the partner is not asked about the other wave's participant
    assert report["counts"] == {"PRIOR_RECIPIENT": 1, "confirmed": 1}
    got = states(sessions, 1)
    assert got[people[0]] == ("REJECTED", "PRIOR_RECIPIENT")
    with sessions() as session:
        assert free_seats(session, 1) == 1
    assert fill_free_seats(sessions, 1)["selected"] == 1
    assert states(sessions, 1)[people[2]] == ("SELECTED", None)


def test_the_ledger_decides_between_two_waves_that_both_confirmed_a_nik(sessions):
    people = in_order([nik(i) for i in range(4)])
    make_wave(sessions, wave_id=1, quota=2, lottery_seed=SEED)
    make_wave(sessions, wave_id=2, quota=1, lottery_seed=SEED)
    add(sessions, 1, people)
    draw_participants(sessions, 1)
    set_state(sessions, 1, people[:2], "CONFIRMED")
    with sessions() as session, session.begin():
        for i, n in enumerate(people[:2]):
            session.execute(
                update(R)
                .where(R.c.wave_id == 1, R.c.nik == n)
                .values(card_number=f"504900000000{i:03d}1")
            )
    # Wave 2 confirmed people[0] too (both account checks passed at once) and has
    # written its credit first.
    add(sessions, 2, [people[0]], "CONFIRMED", draw_round=0, card_number="5049000000099991")
    add_ledger(sessions, ledger_row(2, people[0], "PENDING"))
    sent: list[str] = []

    class Issuer:
        def credit(self, credits):
            sent.extend(c["nik"] for c in credits)
            return {
                c["idempotency_key"]: CreditResult("APPLIED", "t-1", None, False) for c in credits
            }

        def lookup(self, key):
            return None

    report = credit_training_balance_batch(sessions, Issuer(), 1, ids(sessions, 1))
    assert sent == [people[1]]
    assert report["counts"] == {"PRIOR_RECIPIENT": 1, "credited": 1}
    got = states(sessions, 1)
    assert got[people[0]] == ("REJECTED", "PRIOR_RECIPIENT")
    assert got[people[1]] == ("CREDITED", None)
    with sessions() as session:
        mine = session.execute(select(L.c.nik).where(L.c.wave_id == 1)).scalars().all()
        assert mine == [people[1]]
        # The seat is free again: the next round gives it to the next in line.
        assert free_seats(session, 1) == 1
    assert fill_free_seats(sessions, 1)["selected"] == 1
    assert states(sessions, 1)[people[2]] == ("SELECTED", None)


def test_a_credit_racing_another_waves_credit_loses_to_the_unique_index(sessions, monkeypatch):
    """The other wave's credit lands between this batch's look at the ledger and its
    insert: the insert skips the row (no failure of the batch) and the NIK is rejected."""
    import tasks.rollout as rollout

    people = in_order([nik(i) for i in range(3)])
    make_wave(sessions, wave_id=1, quota=1, lottery_seed=SEED)
    make_wave(sessions, wave_id=2, quota=1, lottery_seed=SEED)
    add(sessions, 1, [people[0]], "CONFIRMED", draw_round=0, card_number="5049000000000011")
    add(sessions, 2, [people[0]], "CONFIRMED", draw_round=0, card_number="5049000000000029")
    # The first look finds nothing; the other wave's row is in the ledger by the insert
    # (the look after the insert, which tells a lost race from a program fault, sees it).
    real_look, looks = rollout._live_credits_elsewhere, []

    def look(conn, w, niks):
        looks.append(niks)
        return set() if len(looks) == 1 else real_look(conn, w, niks)

    monkeypatch.setattr(rollout, "_live_credits_elsewhere", look)
    add_ledger(sessions, ledger_row(2, people[0], "PENDING"))

    class Issuer:
        def credit(self, credits):
            raise AssertionError(f"sent {credits}")

        def lookup(self, key):
            return None

    report = credit_training_balance_batch(sessions, Issuer(), 1, ids(sessions, 1))
    assert report["counts"] == {"PRIOR_RECIPIENT": 1}
    assert states(sessions, 1)[people[0]] == ("REJECTED", "PRIOR_RECIPIENT")


def test_a_credit_whose_idempotency_key_is_held_by_another_row_fails_the_batch(sessions):
    """Only another wave's live credit of the NIK is skipped at the insert: any other key
    the ledger refuses is a program fault, and nothing of the batch is written or sent."""
    from rules.money import credit_idempotency_key
    from tasks.rollout import LedgerWriteError

    people = in_order([nik(i) for i in range(2)])
    make_wave(sessions, wave_id=1, quota=1, lottery_seed=SEED)
    add(sessions, 1, [people[0]], "CONFIRMED", draw_round=0, card_number="5049000000000011")
    # Another NIK's row already holds this person's idempotency key (refused credit, so
    # the live-credit index is not involved).
    clash = ledger_row(9, people[1], "REJECTED")
    clash["idempotency_key"] = credit_idempotency_key(1, people[0])
    add_ledger(sessions, clash)

    class Issuer:
        def credit(self, credits):
            raise AssertionError(f"sent {credits}")

        def lookup(self, key):
            return None

    with pytest.raises((IntegrityError, LedgerWriteError)):
        credit_training_balance_batch(sessions, Issuer(), 1, ids(sessions, 1))
    assert states(sessions, 1)[people[0]] == ("CONFIRMED", None)


def test_a_conflict_in_one_wave_blocks_a_credit_of_the_same_nik_in_another(sessions):
    """A CONFLICT credit may be held by the issuer: until a person settles it, the NIK is
    paid (migration 0008). The index refuses a second live credit, and the rollout of the
    other wave rejects the NIK as a prior recipient without calling the issuer."""
    for wave_id in (1, 2):
        make_wave(sessions, wave_id=wave_id, quota=1, lottery_seed=SEED)
    add_ledger(sessions, ledger_row(1, nik(1), "CONFLICT"))
    with pytest.raises(IntegrityError):
        add_ledger(sessions, ledger_row(2, nik(1), "PENDING"))
    add(sessions, 2, [nik(1)], "CONFIRMED", draw_round=0, card_number="5049000000000021")

    class Issuer:
        def credit(self, credits):
            raise AssertionError(f"sent {credits}")

        def lookup(self, key):
            return None

    report = credit_training_balance_batch(sessions, Issuer(), 2, ids(sessions, 2))
    assert report["counts"] == {"PRIOR_RECIPIENT": 1}
    assert states(sessions, 2)[nik(1)] == ("REJECTED", "PRIOR_RECIPIENT")
    with sessions() as session:
        assert session.execute(select(L.c.wave_id).where(L.c.nik == nik(1))).scalars().all() == [1]
