"""The identity, screening and accounts batch functions, called in-process with fake partner
clients (no HTTP, no Prefect) on a real database: each decision and reason, a partner
failure leaving registrants pending (never rejected), a rerun asking nobody twice, the
failures the task wrappers publish, and a batch never overwriting a registrant that
moved on meanwhile. The whole file runs in a few seconds (whole waves reach the same
code through the simulator in tests/e2e and tests/faults)."""

from __future__ import annotations

from datetime import date

import orjson
import pytest
from sqlalchemy import insert, select, update

from models.enums import PendingReason, ReasonCode, State
from models.tables import Registrant
from partners.client import PartnerFailure
from partners.config import AgencySettings
from partners.payment import _FIELDS as PAYMENT_FIELDS
from partners.registry import NOT_FOUND, IdentityAnswer
from partners.registry import _record as registry_record
from rules.draw import draw_key
from rules.money import card_number_for
from tasks.accounts import UNCONFIGURED_PROVIDER, verify_accounts_batch
from tasks.identity import verify_identity_batch
from tasks.screening import screen_batch
from tests.tasks.factories import make_wave

R = Registrant.__table__
SEED = "seed"
ALL = (1, 10**9)  # an id range holding every registrant of these tests
BIRTH = date(1990, 1, 1)
VERIFIED = IdentityAnswer(
    found=True, deceased=False, name_score=95, birth_date_match=True, kk_match=True
)
DOWN = PartnerFailure("registry", "HTTPStatus503", "HTTP 503 after 3 attempts")
BREAKER = PartnerFailure("registry", "CircuitOpen", "circuit open")
AUTH = PartnerFailure("registry", "HTTPStatus401", "HTTP 401", needs_person=True)


def nik(i: int) -> str:
    return f"3171010101900{i:03d}"


# --------------------------------------------------------------------------- fakes
class FakeRegistry:
    """RegistryClient.verify's contract: ref -> IdentityAnswer or PartnerFailure."""

    def __init__(self, answers: dict[str, IdentityAnswer | PartnerFailure]) -> None:
        self.answers = answers  # by NIK
        self.asked: list[list[str]] = []  # the NIKs of each call
        self.during_call = None  # run inside the call (another batch at work meanwhile)

    def verify(self, records):
        sent = [registry_record(r) for r in records]  # the fields the real client sends
        self.asked.append([r["nik"] for r in sent])
        if self.during_call:
            self.during_call()
        return {r["ref"]: self.answers[r["nik"]] for r in sent}


class FakeAgency:
    """AgencyClient.check's contract: ref -> listed (bool) or PartnerFailure."""

    def __init__(self, agency_id: str, category: str, effect: str, listed: dict) -> None:
        self.settings = AgencySettings(
            agency_id, "http://unused.invalid", "key", category=category, effect=effect
        )
        self.listed = listed  # NIK -> bool or PartnerFailure; absent means not listed
        self.asked: list[list[str]] = []

    def check(self, records):
        self.asked.append([r["nik"] for r in records])
        return {r["ref"]: self.listed.get(r["nik"], False) for r in records}


class FakePayment:
    """PaymentClient.verify's contract: ref -> account status or PartnerFailure."""

    def __init__(self, statuses: dict[str, str | PartnerFailure]) -> None:
        self.statuses = statuses  # by NIK
        self.asked: list[list[str]] = []

    def verify(self, records):
        sent = [{name: r[name] for name in PAYMENT_FIELDS} for r in records]
        self.asked.append([r["nik"] for r in sent])
        return {r["ref"]: self.statuses[r["nik"]] for r in sent}


# ------------------------------------------------------------------------- helpers
def add(sessions, wave_id: int, count: int, state: State, start: int = 1, **values) -> None:
    with sessions() as session, session.begin():
        session.connection().execute(
            insert(R),
            [
                {
                    "wave_id": wave_id,
                    "line": i + 1,
                    "nik": nik(i),
                    "kk_number": f"317101{i:010d}",
                    "full_name": f"Person {i}",
                    "birth_date": BIRTH,
                    "province": "31",
                    "phone": f"+62812{i:08d}",
                    "payout_provider": "wallet-a",
                    "payout_account": f"08{i:010d}",
                    "state": state.value,
                    **values,
                }
                for i in range(start, start + count)
            ],
        )


def rows(sessions, wave_id: int = 1) -> dict[str, dict]:
    with sessions() as session:
        return {
            r["nik"]: dict(r)
            for r in session.execute(select(R).where(R.c.wave_id == wave_id)).mappings()
        }


def outcome(sessions, wave_id: int = 1) -> dict[str, tuple[str, str | None, str | None]]:
    """NIK -> (state, reason, pending_stage)."""
    return {
        n: (r["state"], r["reason"], r["pending_stage"]) for n, r in rows(sessions, wave_id).items()
    }


@pytest.fixture
def wave(sessions):
    return make_wave(sessions, lottery_seed=SEED)


# ------------------------------------------------------------------------ identity
IDENTITY_CASES = {
    1: (VERIFIED, State.AWAIT_SCREENING, None),
    2: (NOT_FOUND, State.REJECTED, ReasonCode.NIK_NOT_FOUND),
    3: (IdentityAnswer(True, True, 95, True, True), State.REJECTED, ReasonCode.DECEASED),
    4: (IdentityAnswer(True, False, 95, False, True), State.REJECTED, "BIRTH_DATE_MISMATCH"),
    5: (IdentityAnswer(True, False, 79, True, True), State.REJECTED, ReasonCode.NAME_MISMATCH),
    6: (IdentityAnswer(True, False, 80, True, True), State.AWAIT_SCREENING, None),  # the minimum
    7: (IdentityAnswer(True, False, 95, True, False), State.REJECTED, ReasonCode.KK_MISMATCH),
    # The first failing check wins (wave-rules.md order): deceased before the rest.
    8: (IdentityAnswer(True, True, 10, False, False), State.REJECTED, ReasonCode.DECEASED),
}


def test_identity_verifies_or_rejects_each_with_its_reason_and_keeps_the_evidence(sessions, wave):
    add(sessions, 1, len(IDENTITY_CASES), State.AWAIT_IDENTITY)
    registry = FakeRegistry({nik(i): answer for i, (answer, _, _) in IDENTITY_CASES.items()})

    report = verify_identity_batch(sessions, registry, 1, ALL)

    got = outcome(sessions)
    for i, (_, state, reason) in IDENTITY_CASES.items():
        want = (state.value, None if reason is None else str(reason), None)
        assert got[nik(i)] == want, f"case {i}"
    assert report == {
        "stage": "identity",
        "counts": {
            "verified": 2,
            "NIK_NOT_FOUND": 1,
            "DECEASED": 2,
            "BIRTH_DATE_MISMATCH": 1,
            "NAME_MISMATCH": 1,
            "KK_MISMATCH": 1,
        },
        "failures": [],
    }
    stored = rows(sessions)
    assert orjson.loads(stored[nik(5)]["identity_answer"]) == {
        "found": True,
        "deceased": False,
        "name_score": 79,
        "birth_date_match": True,
        "kk_match": True,
    }
    assert all(r["identity_at"] is not None for r in stored.values())
    assert all(r["decided_at"] is not None for r in stored.values() if r["state"] == "REJECTED")


def test_identity_uses_the_waves_name_score_minimum(sessions):
    make_wave(sessions, lottery_seed=SEED, name_score_min=60)
    add(sessions, 1, 1, State.AWAIT_IDENTITY)
    registry = FakeRegistry({nik(1): IdentityAnswer(True, False, 79, True, True)})
    verify_identity_batch(sessions, registry, 1, ALL)
    assert outcome(sessions)[nik(1)] == ("AWAIT_SCREENING", None, None)


@pytest.mark.parametrize("failure", [DOWN, BREAKER, AUTH], ids=["down", "breaker", "auth"])
def test_identity_partner_failure_leaves_people_pending_and_a_rerun_finishes_them(
    sessions, wave, failure
):
    add(sessions, 1, 3, State.AWAIT_IDENTITY)
    registry = FakeRegistry({nik(1): VERIFIED, nik(2): failure, nik(3): failure})

    report = verify_identity_batch(sessions, registry, 1, ALL)

    assert report["counts"] == {"verified": 1, "PENDING_IDENTITY": 2}
    # What the task wrapper publishes as prakerja.partner.failed (and alerts on).
    assert report["failures"] == [
        {
            "partner": "registry",
            "error_class": failure.error_class,
            "needs_person": failure.needs_person,
            "items": 2,
        }
    ]
    stored = rows(sessions)
    for i in (2, 3):
        r = stored[nik(i)]
        assert (r["state"], r["reason"]) == ("AWAIT_IDENTITY", None), "pending, not rejected"
        assert r["pending_stage"] == PendingReason.PENDING_IDENTITY
        assert r["pending_partner"] == "registry"
        assert r["pending_error"] == f"{failure.error_class}: {failure.detail}"
        assert r["pending_at"] is not None and r["identity_answer"] is None

    # The registry is back: the rerun asks only about those still waiting.
    registry.answers.update({nik(2): VERIFIED, nik(3): NOT_FOUND})
    report = verify_identity_batch(sessions, registry, 1, ALL)
    assert registry.asked[-1] == [nik(2), nik(3)]
    assert report["counts"] == {"verified": 1, "NIK_NOT_FOUND": 1}
    assert outcome(sessions) == {
        nik(1): ("AWAIT_SCREENING", None, None),
        nik(2): ("AWAIT_SCREENING", None, None),
        nik(3): ("REJECTED", "NIK_NOT_FOUND", None),
    }
    assert all(r["pending_error"] is None for r in rows(sessions).values()), "cleared"


def test_identity_rerun_of_a_finished_batch_asks_nobody(sessions, wave):
    add(sessions, 1, 2, State.AWAIT_IDENTITY)
    registry = FakeRegistry({nik(1): VERIFIED, nik(2): NOT_FOUND})
    verify_identity_batch(sessions, registry, 1, ALL)
    before = rows(sessions)

    report = verify_identity_batch(sessions, registry, 1, ALL)

    assert len(registry.asked) == 1
    assert report == {"stage": "identity", "counts": {}, "failures": []}
    assert rows(sessions) == before


def test_identity_batch_sees_only_its_range_wave_and_state(sessions, wave):
    make_wave(sessions, wave_id=2, lottery_seed=SEED)
    add(sessions, 1, 4, State.AWAIT_IDENTITY)
    add(sessions, 1, 1, State.AWAIT_LOCAL, start=5)
    add(sessions, 2, 1, State.AWAIT_IDENTITY, start=6)
    ids = {n: r["id"] for w in (1, 2) for n, r in rows(sessions, w).items()}
    registry = FakeRegistry({nik(i): VERIFIED for i in range(1, 7)})

    # From the second person to the other wave's one: the first is outside the range,
    # the fifth is in another state, the sixth in another wave.
    verify_identity_batch(sessions, registry, 1, (ids[nik(2)], ids[nik(6)]))

    assert registry.asked == [[nik(2), nik(3), nik(4)]]
    assert [n for n, (s, _, _) in outcome(sessions).items() if s == "AWAIT_SCREENING"] == [
        nik(2),
        nik(3),
        nik(4),
    ]
    assert outcome(sessions)[nik(1)][0] == "AWAIT_IDENTITY"
    assert outcome(sessions)[nik(5)][0] == "AWAIT_LOCAL"
    assert outcome(sessions, 2)[nik(6)][0] == "AWAIT_IDENTITY"


def test_identity_never_overwrites_a_registrant_that_moved_on_meanwhile(sessions, wave):
    add(sessions, 1, 2, State.AWAIT_IDENTITY)
    registry = FakeRegistry({nik(1): NOT_FOUND, nik(2): NOT_FOUND})

    def another_batch_verified_person_1() -> None:
        with sessions() as session, session.begin():
            session.connection().execute(
                update(R).where(R.c.nik == nik(1)).values(state=State.AWAIT_SCREENING.value)
            )

    registry.during_call = another_batch_verified_person_1
    verify_identity_batch(sessions, registry, 1, ALL)

    assert outcome(sessions) == {
        nik(1): ("AWAIT_SCREENING", None, None),
        nik(2): ("REJECTED", "NIK_NOT_FOUND", None),
    }


# ----------------------------------------------------------------------- screening
def agencies(**listed) -> list[FakeAgency]:
    """The usual order: two exclusion lists, then a priority list."""
    return [
        FakeAgency("bkn", "CIVIL_SERVANT", "exclude", listed.get("bkn", {})),
        FakeAgency("kemdikbud", "STUDENT", "exclude", listed.get("kemdikbud", {})),
        FakeAgency("kemnaker", "LAID_OFF", "prioritize", listed.get("kemnaker", {})),
    ]


def test_screening_excludes_prioritizes_or_admits_and_stops_at_the_first_exclusion(sessions, wave):
    add(sessions, 1, 5, State.AWAIT_SCREENING)
    clients = agencies(
        bkn={nik(2): True, nik(5): True},
        kemdikbud={nik(3): True, nik(5): True},
        kemnaker={nik(4): True, nik(5): True},
    )

    report = screen_batch(sessions, clients, 1, ALL)

    assert report == {
        "stage": "screening",
        "counts": {"eligible": 2, "EXCLUDED_CIVIL_SERVANT": 2, "EXCLUDED_STUDENT": 1},
        "failures": [],
    }
    stored = rows(sessions)
    assert {n: (r["state"], r["reason"], r["priority"]) for n, r in stored.items()} == {
        nik(1): ("ELIGIBLE", None, False),
        nik(2): ("REJECTED", "EXCLUDED_CIVIL_SERVANT", False),
        nik(3): ("REJECTED", "EXCLUDED_STUDENT", False),
        nik(4): ("ELIGIBLE", None, True),
        nik(5): ("REJECTED", "EXCLUDED_CIVIL_SERVANT", False),
    }
    # Someone excluded is not sent to the agencies after it.
    assert clients[1].asked == [[nik(1), nik(3), nik(4)]]
    assert clients[2].asked == [[nik(1), nik(4)]]
    assert orjson.loads(stored[nik(4)]["screening_answers"]) == {
        "bkn": False,
        "kemdikbud": False,
        "kemnaker": True,
    }
    # The eligible enter the pool with their draw key (the lottery's order).
    assert stored[nik(1)]["draw_key"] == draw_key(SEED, nik(1))
    assert stored[nik(2)]["draw_key"] is None


def test_screening_agency_failure_leaves_people_pending_and_the_rerun_asks_only_it(sessions, wave):
    add(sessions, 1, 3, State.AWAIT_SCREENING)
    down = PartnerFailure("kemdikbud", "ReadTimeout", "no answer in 10 s")
    clients = agencies(bkn={nik(3): True}, kemdikbud={nik(1): down, nik(2): down})

    report = screen_batch(sessions, clients, 1, ALL)

    assert report["counts"] == {"PENDING_SCREENING": 2, "EXCLUDED_CIVIL_SERVANT": 1}
    assert report["failures"] == [
        {"partner": "kemdikbud", "error_class": "ReadTimeout", "needs_person": False, "items": 2}
    ]
    stored = rows(sessions)
    for i in (1, 2):
        r = stored[nik(i)]
        assert (r["state"], r["reason"]) == ("AWAIT_SCREENING", None), "pending, not rejected"
        assert (r["pending_stage"], r["pending_partner"]) == ("PENDING_SCREENING", "kemdikbud")
        # What was learnt is kept; the agency after the failed one was not asked.
        assert orjson.loads(r["screening_answers"]) == {"bkn": False}
    assert clients[2].asked == []

    clients[1].listed = {nik(2): True}
    report = screen_batch(sessions, clients, 1, ALL)

    assert clients[0].asked == [[nik(1), nik(2), nik(3)]], "bkn not asked twice"
    assert clients[1].asked[-1] == [nik(1), nik(2)]
    assert clients[2].asked == [[nik(1)]]
    assert report["counts"] == {"eligible": 1, "EXCLUDED_STUDENT": 1}
    assert outcome(sessions) == {
        nik(1): ("ELIGIBLE", None, None),
        nik(2): ("REJECTED", "EXCLUDED_STUDENT", None),
        nik(3): ("REJECTED", "EXCLUDED_CIVIL_SERVANT", None),
    }


def test_screening_priority_list_failure_keeps_people_out_of_the_pool(sessions, wave):
    """An unanswered priority list is not 'not listed': the draw would rank them wrongly."""
    add(sessions, 1, 1, State.AWAIT_SCREENING)
    breaker = PartnerFailure("kemnaker", "CircuitOpen", "circuit open")
    clients = agencies(kemnaker={nik(1): breaker})

    report = screen_batch(sessions, clients, 1, ALL)

    assert outcome(sessions)[nik(1)] == ("AWAIT_SCREENING", None, "PENDING_SCREENING")
    assert report["failures"][0]["error_class"] == "CircuitOpen"


def test_screening_rerun_of_a_finished_batch_asks_nobody(sessions, wave):
    add(sessions, 1, 2, State.AWAIT_SCREENING)
    clients = agencies(bkn={nik(2): True})
    screen_batch(sessions, clients, 1, ALL)
    before = rows(sessions)

    report = screen_batch(sessions, clients, 1, ALL)

    assert [len(c.asked) for c in clients] == [1, 1, 1]
    assert report == {"stage": "screening", "counts": {}, "failures": []}
    assert rows(sessions) == before


# ------------------------------------------------------------------------ accounts
ACCOUNT_CASES = {
    1: ("VERIFIED", "CONFIRMED", None),
    2: ("NOT_FOUND", "REJECTED", "ACCOUNT_NOT_FOUND"),
    3: ("NIK_MISMATCH", "REJECTED", "ACCOUNT_NIK_MISMATCH"),
    4: ("NOT_KYC", "REJECTED", "ACCOUNT_NOT_KYC"),
    5: ("BLOCKED", "REJECTED", "ACCOUNT_BLOCKED"),
}


def test_accounts_confirm_with_a_card_or_reject_with_the_status_reason(sessions, wave):
    add(sessions, 1, len(ACCOUNT_CASES), State.SELECTED, draw_round=0)
    wallet = FakePayment({nik(i): status for i, (status, _, _) in ACCOUNT_CASES.items()})

    report = verify_accounts_batch(sessions, {"wallet-a": wallet}, 1, ALL)

    stored = rows(sessions)
    for i, (status, state, reason) in ACCOUNT_CASES.items():
        r = stored[nik(i)]
        assert (r["state"], r["reason"], r["account_status"]) == (state, reason, status)
    assert stored[nik(1)]["card_number"] == card_number_for(stored[nik(1)]["id"])
    assert stored[nik(1)]["confirmed_at"] is not None
    assert all(stored[nik(i)]["card_number"] is None for i in range(2, 6))
    assert report["counts"] == {
        "confirmed": 1,
        "ACCOUNT_NOT_FOUND": 1,
        "ACCOUNT_NIK_MISMATCH": 1,
        "ACCOUNT_NOT_KYC": 1,
        "ACCOUNT_BLOCKED": 1,
    }


def test_accounts_ask_each_persons_own_provider_and_refuse_an_unconfigured_one(sessions, wave):
    add(sessions, 1, 2, State.SELECTED, draw_round=0)
    add(sessions, 1, 1, State.SELECTED, start=3, draw_round=0, payout_provider="bank-b")
    add(sessions, 1, 1, State.SELECTED, start=4, draw_round=0, payout_provider="bank-x")
    wallet = FakePayment({nik(1): "VERIFIED", nik(2): "VERIFIED"})
    bank = FakePayment({nik(3): "VERIFIED"})

    report = verify_accounts_batch(sessions, {"wallet-a": wallet, "bank-b": bank}, 1, ALL)

    assert wallet.asked == [[nik(1), nik(2)]] and bank.asked == [[nik(3)]]
    r = rows(sessions)[nik(4)]
    assert (r["state"], r["reason"], r["account_status"]) == (
        "REJECTED",
        "ACCOUNT_NOT_FOUND",
        UNCONFIGURED_PROVIDER,
    )
    assert report["counts"] == {"confirmed": 3, "ACCOUNT_NOT_FOUND": 1}


def test_accounts_reject_a_participant_of_another_wave_without_asking(sessions, wave):
    make_wave(sessions, wave_id=2, lottery_seed=SEED)
    add(sessions, 2, 1, State.CREDITED, draw_round=0)
    add(sessions, 1, 2, State.SELECTED, draw_round=0)
    wallet = FakePayment({nik(2): "VERIFIED"})

    report = verify_accounts_batch(sessions, {"wallet-a": wallet}, 1, ALL)

    assert wallet.asked == [[nik(2)]]
    assert outcome(sessions)[nik(1)] == ("REJECTED", "PRIOR_RECIPIENT", None)
    assert report["counts"] == {"PRIOR_RECIPIENT": 1, "confirmed": 1}


@pytest.mark.parametrize(
    "failure",
    [
        PartnerFailure("wallet-a", "ConnectionError", "connection refused"),
        PartnerFailure("wallet-a", "CircuitOpen", "circuit open"),
        PartnerFailure("wallet-a", "HTTPStatus403", "HTTP 403", needs_person=True),
    ],
    ids=["down", "breaker", "auth"],
)
def test_accounts_partner_failure_leaves_people_selected_and_pending(sessions, wave, failure):
    add(sessions, 1, 2, State.SELECTED, draw_round=0)
    wallet = FakePayment({nik(1): failure, nik(2): "VERIFIED"})

    report = verify_accounts_batch(sessions, {"wallet-a": wallet}, 1, ALL)

    assert report["counts"] == {"PENDING_ACCOUNT": 1, "confirmed": 1}
    assert report["failures"] == [
        {
            "partner": "wallet-a",
            "error_class": failure.error_class,
            "needs_person": failure.needs_person,
            "items": 1,
        }
    ]
    r = rows(sessions)[nik(1)]
    assert (r["state"], r["reason"], r["card_number"]) == ("SELECTED", None, None)
    assert (r["pending_stage"], r["pending_partner"]) == ("PENDING_ACCOUNT", "wallet-a")

    wallet.statuses[nik(1)] = "BLOCKED"
    report = verify_accounts_batch(sessions, {"wallet-a": wallet}, 1, ALL)
    assert wallet.asked[-1] == [nik(1)], "the confirmed one is not asked again"
    assert report["counts"] == {"ACCOUNT_BLOCKED": 1}
    assert outcome(sessions)[nik(1)] == ("REJECTED", "ACCOUNT_BLOCKED", None)


def test_accounts_rerun_of_a_finished_batch_asks_nobody(sessions, wave):
    add(sessions, 1, 2, State.SELECTED, draw_round=0)
    wallet = FakePayment({nik(1): "VERIFIED", nik(2): "NOT_KYC"})
    verify_accounts_batch(sessions, {"wallet-a": wallet}, 1, ALL)
    before = rows(sessions)

    report = verify_accounts_batch(sessions, {"wallet-a": wallet}, 1, ALL)

    assert len(wallet.asked) == 1
    assert report == {"stage": "accounts", "counts": {}, "failures": []}
    assert rows(sessions) == before
