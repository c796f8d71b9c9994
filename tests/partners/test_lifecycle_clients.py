"""The lifecycle calls (partner-api.md): the training platforms' event feed, the issuer's
revocations, the payment partners' disbursements and statements; requests-mock stands for
the partner."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from partners.client import PartnerError, PartnerFailure
from partners.config import RetrySettings, simulator_config
from partners.issuer import IssuerClient, RevocationResult, parse_revocation
from partners.payment import (
    DisbursementResult,
    PaymentClient,
    PaymentStatementEntry,
    parse_disbursement,
)
from partners.training import FeedPage, TrainingEvent, TrainingPlatformClient, parse_event
from partners.wiring import build_partners
from tests.partners import FakeClock, settings

ROOT = "http://partner.test"
ISSUER = ROOT + "/issuer"
BANK = ROOT + "/payment/bank-a"
FEED = ROOT + "/training/marketplace-a"
CARD = "5049000000000001"
NIK = "3171014101900001"
REVOKE_KEY = f"w1:{NIK}:training:revoke"
PAY_KEY = f"w1:{NIK}:incentive:1"


def make(cls, base: str, **changes):
    clock = FakeClock()
    return cls(settings(base_url=base, **changes), sleep=clock.sleep, clock=clock)


def query(request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url).query)


def logged(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ issuer: revocations
REVOCATION = {
    "idempotency_key": REVOKE_KEY,
    "card_number": CARD,
    "reason": "NO_TRAINING_IN_TIME",
    "reference": "revoke/2020-05-22",
}


def test_revocations_send_their_fields_and_read_each_status(requests_mock):
    route = requests_mock.post(
        ISSUER + "/v1/revocations",
        json={
            "results": [
                {"idempotency_key": "k3", "status": "CONFLICT"},
                {
                    "idempotency_key": REVOKE_KEY,
                    "status": "REVOKED",
                    "amount_returned": 1_000_000,
                    "replayed": False,
                },
                {"idempotency_key": "k2", "status": "CARD_USED", "replayed": False},
            ]
        },
    )
    client = make(IssuerClient, ISSUER)

    result = client.revoke(
        [
            {**REVOCATION, "nik": NIK},  # not part of a revocation: not sent
            {**REVOCATION, "idempotency_key": "k2"},
            {**REVOCATION, "idempotency_key": "k3", "reason": "BLACKLISTED"},
        ]
    )

    assert result == {
        REVOKE_KEY: RevocationResult("REVOKED", 1_000_000, None, False),
        "k2": RevocationResult("CARD_USED", None, None, False),
        "k3": RevocationResult("CONFLICT", None, None, False),
    }
    assert route.call_count == 1
    assert route.last_request.json()["revocations"][0] == REVOCATION


def test_a_replayed_revocation_answers_the_original_result(requests_mock):
    requests_mock.post(
        ISSUER + "/v1/revocations",
        json={
            "results": [
                {
                    "idempotency_key": REVOKE_KEY,
                    "status": "REVOKED",
                    "amount_returned": 0,
                    "replayed": True,
                }
            ]
        },
    )

    result = make(IssuerClient, ISSUER).revoke([REVOCATION])

    assert result == {REVOKE_KEY: RevocationResult("REVOKED", 0, None, True)}


def test_a_revoked_result_without_an_amount_is_asked_again_under_the_same_key(requests_mock):
    route = requests_mock.post(
        ISSUER + "/v1/revocations",
        [
            {"json": {"results": [{"idempotency_key": REVOKE_KEY, "status": "REVOKED"}]}},
            {"status_code": 502},
            {
                "json": {
                    "results": [
                        {
                            "idempotency_key": REVOKE_KEY,
                            "status": "REVOKED",
                            "amount_returned": 650_000,
                            "replayed": True,
                        }
                    ]
                }
            },
        ],
    )

    result = make(IssuerClient, ISSUER).revoke([REVOCATION])

    assert result == {REVOKE_KEY: RevocationResult("REVOKED", 650_000, None, True)}
    keys = {r.json()["revocations"][0]["idempotency_key"] for r in route.request_history}
    assert keys == {REVOKE_KEY} and route.call_count == 3


def test_a_revocation_that_stays_unreadable_is_a_failure_after_its_retries(requests_mock):
    route = requests_mock.post(
        ISSUER + "/v1/revocations",
        json={"results": [{"idempotency_key": REVOKE_KEY, "status": "REVOKED_MAYBE"}]},
    )
    client = make(IssuerClient, ISSUER, retry=RetrySettings(attempts=3))

    failure = client.revoke([REVOCATION])[REVOKE_KEY]

    assert isinstance(failure, PartnerFailure)
    assert failure.error_class == "UnreadableResult" and not failure.needs_person
    assert route.call_count == 3


@pytest.mark.parametrize(
    "result",
    [
        {"status": "REVOKED"},
        {"status": "REVOKED", "amount_returned": None},
        {"status": "REVOKED", "amount_returned": -1},
        {"status": "REVOKED", "amount_returned": 1.5},
        {"status": "REVOKED", "amount_returned": True},
        {"status": "REVOKED", "amount_returned": "1000000"},
        {"status": "CARD_USED", "amount_returned": "0"},
        {"status": "CARD_USED", "replayed": "no"},
        {"status": "CONFLICT", "reason": 7},
        {"status": "APPLIED"},
        {},
    ],
)
def test_revocation_results_outside_the_contract_are_unreadable(result):
    assert parse_revocation(result) is None


def test_a_revocation_reason_outside_the_contract_is_refused_before_calling():
    with pytest.raises(ValueError, match="revocation #2: reason"):
        make(IssuerClient, ISSUER).revoke([REVOCATION, {**REVOCATION, "reason": "LATE"}])


def test_revocation_lookup_of_a_key_never_received_is_none(requests_mock):
    route = requests_mock.get(ISSUER + "/v1/revocations/" + REVOKE_KEY, status_code=404)

    assert make(IssuerClient, ISSUER).lookup_revocation(REVOKE_KEY) is None
    assert route.call_count == 1


def test_revocation_lookup_reads_the_result_and_logs_the_route_not_the_key(requests_mock, caplog):
    route = requests_mock.get(
        ISSUER + "/v1/revocations/" + REVOKE_KEY,
        [
            {"status_code": 503},
            {
                "json": {
                    "idempotency_key": REVOKE_KEY,
                    "status": "REVOKED",
                    "amount_returned": 1_000_000,
                    "replayed": True,
                }
            },
        ],
    )
    caplog.set_level(logging.DEBUG, logger="prakerja.partners")

    result = make(IssuerClient, ISSUER).lookup_revocation(REVOKE_KEY)

    assert result == RevocationResult("REVOKED", 1_000_000, None, True)
    assert route.call_count == 2
    text = logged(caplog)
    assert "/v1/revocations/{idempotency_key}" in text and NIK not in text


def test_revocation_lookup_answering_another_key_is_not_taken(requests_mock):
    requests_mock.get(
        ISSUER + "/v1/revocations/" + REVOKE_KEY,
        json={"idempotency_key": "other", "status": "CARD_USED"},
    )
    client = make(IssuerClient, ISSUER, retry=RetrySettings(attempts=2))

    result = client.lookup_revocation(REVOKE_KEY)

    assert isinstance(result, PartnerFailure) and result.error_class == "InvalidJSON"


# ------------------------------------------------------------------ payment: disbursements
DISBURSEMENT = {
    "idempotency_key": PAY_KEY,
    "account": "081234567890",
    "nik": NIK,
    "amount": 600_000,
    "currency": "IDR",
    "reference": "payout-2020-05-26",
}


def test_disbursements_send_their_fields_and_read_each_status(requests_mock):
    route = requests_mock.post(
        BANK + "/v1/disbursements",
        json={
            "results": [
                {
                    "idempotency_key": PAY_KEY,
                    "status": "COMPLETED",
                    "transfer_id": "d-45",
                    "replayed": False,
                },
                {"idempotency_key": "k2", "status": "FAILED", "reason": "ACCOUNT_CLOSED"},
                # A reason the contract does not list is kept as the partner said it.
                {"idempotency_key": "k3", "status": "FAILED", "reason": "BANK_HOLIDAY"},
                {"idempotency_key": "k4", "status": "CONFLICT"},
            ]
        },
    )
    client = make(PaymentClient, BANK)

    result = client.disburse(
        [
            {**DISBURSEMENT, "phone": "+6281234567890"},  # not part of a disbursement
            *({**DISBURSEMENT, "idempotency_key": k} for k in ("k2", "k3", "k4")),
        ]
    )

    assert result == {
        PAY_KEY: DisbursementResult("COMPLETED", "d-45", None, False),
        "k2": DisbursementResult("FAILED", None, "ACCOUNT_CLOSED", False),
        "k3": DisbursementResult("FAILED", None, "BANK_HOLIDAY", False),
        "k4": DisbursementResult("CONFLICT", None, None, False),
    }
    assert route.last_request.json()["disbursements"][0] == DISBURSEMENT


def test_a_replayed_disbursement_answers_the_original_result(requests_mock):
    requests_mock.post(
        BANK + "/v1/disbursements",
        json={
            "results": [
                {
                    "idempotency_key": PAY_KEY,
                    "status": "COMPLETED",
                    "transfer_id": "d-45",
                    "replayed": True,
                }
            ]
        },
    )

    result = make(PaymentClient, BANK).disburse([DISBURSEMENT])

    assert result == {PAY_KEY: DisbursementResult("COMPLETED", "d-45", None, True)}


def test_a_completed_disbursement_without_transfer_id_is_asked_again_under_the_same_key(
    requests_mock,
):
    route = requests_mock.post(
        BANK + "/v1/disbursements",
        [
            {"json": {"results": [{"idempotency_key": PAY_KEY, "status": "COMPLETED"}]}},
            {"text": '{"results": [trunc'},
            {
                "json": {
                    "results": [
                        {
                            "idempotency_key": PAY_KEY,
                            "status": "COMPLETED",
                            "transfer_id": "d-46",
                            "replayed": True,
                        }
                    ]
                }
            },
        ],
    )

    result = make(PaymentClient, BANK).disburse([DISBURSEMENT])

    assert result == {PAY_KEY: DisbursementResult("COMPLETED", "d-46", None, True)}
    keys = {r.json()["disbursements"][0]["idempotency_key"] for r in route.request_history}
    assert keys == {PAY_KEY} and route.call_count == 3


@pytest.mark.parametrize(
    "result",
    [
        {"status": "COMPLETED"},
        {"status": "COMPLETED", "transfer_id": ""},
        {"status": "COMPLETED", "transfer_id": 45},
        {"status": "FAILED", "reason": ["ACCOUNT_CLOSED"]},
        {"status": "CONFLICT", "replayed": 1},
        {"status": "PENDING"},
    ],
)
def test_disbursement_results_outside_the_contract_are_unreadable(result):
    assert parse_disbursement(result) is None


@pytest.mark.parametrize("amount", [600_000.0, "600000", True, None])
def test_a_disbursement_amount_that_is_not_an_int_is_refused_before_calling(amount):
    with pytest.raises(ValueError, match="disbursement #2: amount must be an int"):
        make(PaymentClient, BANK).disburse([DISBURSEMENT, {**DISBURSEMENT, "amount": amount}])


def test_disbursement_lookup_of_a_key_never_received_is_none(requests_mock):
    route = requests_mock.get(BANK + "/v1/disbursements/" + PAY_KEY, status_code=404)

    assert make(PaymentClient, BANK).lookup_disbursement(PAY_KEY) is None
    assert route.call_count == 1


def test_disbursement_lookup_reads_the_result_and_logs_the_route_not_the_key(requests_mock, caplog):
    requests_mock.get(
        BANK + "/v1/disbursements/" + PAY_KEY,
        json={"idempotency_key": PAY_KEY, "status": "FAILED", "reason": "LIMIT_EXCEEDED"},
    )
    caplog.set_level(logging.DEBUG, logger="prakerja.partners")

    result = make(PaymentClient, BANK).lookup_disbursement(PAY_KEY)

    assert result == DisbursementResult("FAILED", None, "LIMIT_EXCEEDED", False)
    text = logged(caplog)
    assert "/v1/disbursements/{idempotency_key}" in text and NIK not in text


def test_disbursement_lookup_that_keeps_failing_is_a_failure(requests_mock):
    requests_mock.get(BANK + "/v1/disbursements/" + PAY_KEY, status_code=500)

    result = make(PaymentClient, BANK, retry=RetrySettings(attempts=2)).lookup_disbursement(PAY_KEY)

    assert result == PartnerFailure("registry", "HTTPStatus500", "HTTP 500 after 2 attempts")


def payment_entry(n: int) -> dict:
    return {
        "transfer_id": f"d-{n}",
        "idempotency_key": f"k{n}",
        "account": "081234567890",
        "amount": 600_000,
    }


def test_payment_statement_follows_the_cursor(requests_mock):
    pages = {
        None: {"entries": [payment_entry(1), payment_entry(2)], "next": "c1"},
        "c1": {"entries": [payment_entry(3)], "next": "c2"},
        "c2": {"entries": [], "next": None},
    }

    def page(request, context):
        q = query(request)
        assert q["reference"] == ["payout-2020-05-26"] and q["limit"] == ["2"]
        return pages[q.get("after", [None])[0]]

    route = requests_mock.get(BANK + "/v1/statements", json=page)

    entries = list(make(PaymentClient, BANK).statement("payout-2020-05-26", page_size=2))

    assert entries == [
        PaymentStatementEntry("d-1", "k1", "081234567890", 600_000),
        PaymentStatementEntry("d-2", "k2", "081234567890", 600_000),
        PaymentStatementEntry("d-3", "k3", "081234567890", 600_000),
    ]
    assert route.call_count == 3


def test_payment_statement_whose_cursor_comes_back_raises(requests_mock):
    def page(request, context):
        return {"entries": [payment_entry(1)], "next": "c1"}

    requests_mock.get(BANK + "/v1/statements", json=page)

    with pytest.raises(PartnerError) as caught:
        list(make(PaymentClient, BANK).statement("payout-2020-05-26"))

    assert caught.value.failure.error_class == "StatementCursorLoop"


def test_payment_statement_that_cannot_be_read_raises_after_its_retries(requests_mock):
    # An issuer's entry (card_number, no account) is not a payment partner's.
    route = requests_mock.get(
        BANK + "/v1/statements",
        json={
            "entries": [{"transfer_id": "d-1", "idempotency_key": "k1", "card_number": "5049"}],
            "next": None,
        },
    )
    client = make(PaymentClient, BANK, retry=RetrySettings(attempts=2))

    with pytest.raises(PartnerError) as caught:
        list(client.statement("payout-2020-05-26"))

    assert caught.value.failure.error_class == "InvalidJSON" and route.call_count == 2


# ------------------------------------------------------------------ training platforms: feed
WIB = timezone(timedelta(hours=7))


def event(n: int, **changes) -> dict:
    return {
        "event_id": f"tokped-{n:06d}",
        "type": "PURCHASED",
        "card_number": CARD,
        "course_id": "c-101",
        "price": 350_000,
        "at": "2020-04-25T10:00:00+07:00",
        **changes,
    }


def test_the_first_page_is_asked_without_a_cursor_and_read_with_aware_times(requests_mock):
    route = requests_mock.get(
        FEED + "/v1/events",
        json={
            "events": [
                event(1),
                event(2, type="CANCELLED", price=None, at="2020-04-25T04:00:00Z"),
                event(3, type="CANCELLED", at="2020-04-25T11:00:00+07:00"),
                {**event(4, type="COMPLETED"), "price": None},
                {k: v for k, v in event(5, type="COMPLETED").items() if k != "price"},
            ],
            "next": "c1",
            "more": False,
        },
    )

    page = make(TrainingPlatformClient, FEED).events(None)

    assert query(route.last_request) == {"limit": ["1000"]}
    assert page.next == "c1" and page.more is False and page.unreadable == 0
    assert page.events[0] == TrainingEvent(
        "tokped-000001",
        "PURCHASED",
        CARD,
        "c-101",
        350_000,
        datetime(2020, 4, 25, 10, 0, tzinfo=WIB),
    )
    assert [e.type for e in page.events] == [
        "PURCHASED",
        "CANCELLED",
        "CANCELLED",
        "COMPLETED",
        "COMPLETED",
    ]
    assert [e.price for e in page.events] == [350_000, None, 350_000, None, None]
    assert all(e.at.tzinfo is not None for e in page.events)
    assert page.events[1].at == datetime(2020, 4, 25, 4, 0, tzinfo=UTC)


def test_the_feed_is_read_page_after_page_from_each_next_cursor(requests_mock):
    pages = {
        "c0": {"events": [event(1), event(2)], "next": "c1", "more": True},
        "c1": {"events": [event(3)], "next": "c2", "more": False},
    }

    def page(request, context):
        q = query(request)
        assert q["limit"] == ["2"]
        return pages[q["after"][0]]

    route = requests_mock.get(FEED + "/v1/events", json=page)
    client = make(TrainingPlatformClient, FEED)

    seen, cursor, more = [], "c0", True
    while more:
        got = client.events(cursor, limit=2)
        seen += [e.event_id for e in got.events]
        cursor, more = got.next, got.more

    assert seen == ["tokped-000001", "tokped-000002", "tokped-000003"]
    assert cursor == "c2" and route.call_count == 2


def test_an_event_that_cannot_be_read_is_left_out_and_counted(requests_mock, caplog):
    requests_mock.get(
        FEED + "/v1/events",
        json={
            "events": [
                event(1),
                event(2, type="REFUNDED"),
                event(3, price=None),  # a purchase without its price
                event(4, type="COMPLETED"),  # a completion with a price
                event(5, at="2020-04-25T10:00:00"),  # no offset
                event(6, at="yesterday"),
                event(7, price=True),
                event(8, price=-5),
                event(9, card_number=""),
                event(10, event_id=None),
                "tokped-000011",
                event(12, type="CANCELLED", price=None),
            ],
            "next": "c1",
            "more": True,
        },
    )
    caplog.set_level(logging.DEBUG, logger="prakerja.partners")

    page = make(TrainingPlatformClient, FEED).events("c0")

    assert [e.event_id for e in page.events] == ["tokped-000001", "tokped-000012"]
    assert page.unreadable == 10 and page.next == "c1" and page.more is True
    text = logged(caplog)
    assert "10 unreadable events of 12" in text and "/v1/events" in text
    assert CARD not in text and "tokped" not in text


def test_a_page_that_cannot_be_read_is_retried(requests_mock):
    route = requests_mock.get(
        FEED + "/v1/events",
        [
            {"json": {"next": "c1", "more": False}},  # no events list
            {"json": {"events": [], "next": None, "more": False}},  # next not a string
            {"json": {"events": [], "next": "c1", "more": "no"}},
            {"text": "<html>"},
            {"json": {"events": [event(1)], "next": "c1"}},  # no `more`: nothing waiting
        ],
    )

    page = make(TrainingPlatformClient, FEED).events("c0", limit=10)

    assert page == FeedPage([parse_event(event(1))], "c1", False, 0)
    assert route.call_count == 5
    assert all(query(r) == {"after": ["c0"], "limit": ["10"]} for r in route.request_history)


def test_a_page_that_stays_unreadable_raises_partner_error(requests_mock):
    route = requests_mock.get(FEED + "/v1/events", json={"events": "none", "next": "c1"})
    client = make(TrainingPlatformClient, FEED, retry=RetrySettings(attempts=3))

    with pytest.raises(PartnerError) as caught:
        client.events(None)

    assert caught.value.failure.error_class == "InvalidJSON"
    assert caught.value.failure.detail == "unreadable body after 3 attempts"
    assert route.call_count == 3


def test_a_feed_that_is_not_there_raises_partner_error(requests_mock):
    requests_mock.get(FEED + "/v1/events", status_code=404)

    with pytest.raises(PartnerError) as caught:
        make(TrainingPlatformClient, FEED).events(None)

    assert caught.value.failure.error_class == "HTTPStatus404"
    assert caught.value.failure.needs_person


def test_refused_credentials_on_the_feed_are_not_retried(requests_mock):
    route = requests_mock.get(FEED + "/v1/events", status_code=401)

    with pytest.raises(PartnerError) as caught:
        make(TrainingPlatformClient, FEED).events(None)

    assert caught.value.failure.error_class == "HTTPStatus401" and route.call_count == 1


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_a_feed_limit_that_is_not_a_positive_int_is_refused(limit):
    with pytest.raises(ValueError, match="limit"):
        make(TrainingPlatformClient, FEED).events(None, limit=limit)


# ------------------------------------------------------------------ wiring
def test_wiring_builds_a_feed_client_per_platform_in_file_order():
    partners = build_partners(simulator_config("http://127.0.0.1:9"))

    assert [(p.settings.id, p.settings.base_url) for p in partners.platforms] == [
        ("marketplace-a", "http://127.0.0.1:9/training/marketplace-a"),
        ("marketplace-b", "http://127.0.0.1:9/training/marketplace-b"),
    ]
    assert all(isinstance(p, TrainingPlatformClient) for p in partners.platforms)
    partners.close()


def test_closing_the_partners_closes_the_platforms_sessions(requests_mock):
    requests_mock.get(
        "http://127.0.0.1:9/training/marketplace-b/v1/events",
        json={"events": [], "next": "c1", "more": False},
    )
    partners = build_partners(simulator_config("http://127.0.0.1:9"))
    platform = partners.platforms[1]
    platform.events(None)
    assert platform._sessions

    partners.close()

    assert platform._sessions == []
