"""Each partner's client: the path it calls, what it sends, and how it reads an answer."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from partners.agency import AgencyClient
from partners.client import PartnerError, PartnerFailure
from partners.config import AgencySettings, RetrySettings, simulator_config
from partners.issuer import CreditResult, IssuerClient, StatementEntry
from partners.notifier import MessageResult, NotifierClient
from partners.payment import PaymentClient
from partners.registry import NOT_FOUND, IdentityAnswer, RegistryClient, parse_identity
from partners.wiring import build_partners
from tests.partners import API_KEY, FakeClock, settings

ROOT = "http://partner.test"
KEY = "w1:3171014101900001:training"


def make(cls, base: str, **changes):
    clock = FakeClock()
    return cls(settings(base_url=base, **changes), sleep=clock.sleep, clock=clock)


PERSON = {
    "ref": "r1",
    "nik": "3171014101900001",
    "full_name": "Siti Aminah",
    "birth_date": "1990-01-01",
    "kk_number": "3171010101100001",
}


def test_registry_sends_the_identity_fields_and_reads_the_answer(requests_mock):
    route = requests_mock.post(
        ROOT + "/registry/v1/identity/verify",
        json={
            "results": [
                {
                    "ref": "r1",
                    "found": True,
                    "deceased": False,
                    "name_score": 93,
                    "birth_date_match": True,
                    "kk_match": True,
                },
                {"ref": "r2", "found": False, "deceased": None},
            ]
        },
    )
    client = make(RegistryClient, ROOT + "/registry")

    result = client.verify([{**PERSON, "extra": "not sent"}, {**PERSON, "ref": "r2"}])

    assert result == {"r1": IdentityAnswer(True, False, 93, True, True), "r2": NOT_FOUND}
    assert route.last_request.json()["records"][0] == PERSON


@pytest.mark.parametrize(
    "result",
    [
        {"found": "yes"},
        {
            "found": True,
            "deceased": False,
            "name_score": True,
            "birth_date_match": True,
            "kk_match": True,
        },
        {
            "found": True,
            "deceased": False,
            "name_score": 101,
            "birth_date_match": True,
            "kk_match": True,
        },
        {"found": True, "deceased": False, "name_score": 50, "birth_date_match": True},
        {
            "found": True,
            "deceased": None,
            "name_score": 50,
            "birth_date_match": True,
            "kk_match": False,
        },
    ],
)
def test_registry_results_it_cannot_trust_are_unreadable(result):
    assert parse_identity({"ref": "r1", **result}) is None


def test_agency_reports_listed_per_person(requests_mock):
    requests_mock.post(
        ROOT + "/agency/soe/v1/screening/check",
        json={"results": [{"ref": "r1", "listed": True}, {"ref": "r2", "listed": False}]},
    )
    agency_settings = AgencySettings(
        id="soe",
        base_url=ROOT + "/agency/soe",
        api_key=API_KEY,
        category="SOE_BOARD",
        effect="exclude",
    )
    client = AgencyClient(agency_settings, sleep=FakeClock().sleep)

    result = client.check([{"ref": "r1", "nik": "1"}, {"ref": "r2", "nik": "2"}])

    assert result == {"r1": True, "r2": False}
    assert client.settings.category == "SOE_BOARD"


def test_payment_status_outside_the_contract_is_retried_then_failed(requests_mock):
    route = requests_mock.post(
        ROOT + "/payment/bank-a/v1/accounts/verify",
        json={"results": [{"ref": "r1", "status": "VERIFIED"}, {"ref": "r2", "status": "MAYBE"}]},
    )
    client = make(PaymentClient, ROOT + "/payment/bank-a", retry=RetrySettings(attempts=3))
    record = {"account": "081234567890", "nik": "3171014101900001", "phone": "+6281234567890"}

    result = client.verify([{"ref": "r1", **record}, {"ref": "r2", **record}])

    assert result["r1"] == "VERIFIED"
    assert result["r2"].error_class == "UnreadableResult"
    assert route.call_count == 3


CREDIT = {
    "idempotency_key": KEY,
    "card_number": "5049000000000001",
    "nik": "3171014101900001",
    "amount": 1_000_000,
    "currency": "IDR",
    "reference": "wave-1/training",
}


def test_issuer_credits_are_read_by_idempotency_key(requests_mock):
    requests_mock.post(
        ROOT + "/issuer/v1/credits",
        json={
            "results": [
                {
                    "idempotency_key": KEY,
                    "status": "APPLIED",
                    "transfer_id": "t-1",
                    "replayed": True,
                },
                {"idempotency_key": "k2", "status": "REJECTED", "reason": "CARD_BLOCKED"},
            ]
        },
    )
    client = make(IssuerClient, ROOT + "/issuer")

    result = client.credit([CREDIT, {**CREDIT, "idempotency_key": "k2"}])

    assert result == {
        KEY: CreditResult("APPLIED", "t-1", None, True),
        "k2": CreditResult("REJECTED", None, "CARD_BLOCKED", False),
    }


def test_an_applied_credit_without_transfer_id_is_asked_again_under_the_same_key(requests_mock):
    route = requests_mock.post(
        ROOT + "/issuer/v1/credits",
        [
            {"json": {"results": [{"idempotency_key": KEY, "status": "APPLIED"}]}},
            {"status_code": 504},
            {
                "json": {
                    "results": [
                        {
                            "idempotency_key": KEY,
                            "status": "APPLIED",
                            "transfer_id": "t-9",
                            "replayed": True,
                        }
                    ]
                }
            },
        ],
    )

    result = make(IssuerClient, ROOT + "/issuer").credit([CREDIT])

    assert result == {KEY: CreditResult("APPLIED", "t-9", None, True)}
    assert {r.json()["credits"][0]["idempotency_key"] for r in route.request_history} == {KEY}


def test_a_credit_amount_that_is_not_an_int_is_refused_before_calling():
    with pytest.raises(ValueError, match="amount"):
        make(IssuerClient, ROOT + "/issuer").credit([{**CREDIT, "amount": 1_000_000.0}])


def test_issuer_lookup_of_a_key_it_never_received_is_none(requests_mock):
    route = requests_mock.get(ROOT + "/issuer/v1/credits/" + KEY, status_code=404)

    assert make(IssuerClient, ROOT + "/issuer").lookup(KEY) is None
    assert route.call_count == 1


def test_issuer_lookup_returns_the_original_result(requests_mock):
    requests_mock.get(
        ROOT + "/issuer/v1/credits/" + KEY,
        json={"idempotency_key": KEY, "status": "APPLIED", "transfer_id": "t-1", "replayed": False},
    )

    assert make(IssuerClient, ROOT + "/issuer").lookup(KEY) == CreditResult(
        "APPLIED", "t-1", None, False
    )


def test_issuer_lookup_that_keeps_failing_is_a_failure_not_an_exception(requests_mock):
    requests_mock.get(ROOT + "/issuer/v1/credits/" + KEY, status_code=503)

    result = make(IssuerClient, ROOT + "/issuer", retry=RetrySettings(attempts=2)).lookup(KEY)

    assert result == PartnerFailure("registry", "HTTPStatus503", "HTTP 503 after 2 attempts")


def entry(n: int) -> dict:
    return {
        "transfer_id": f"t-{n}",
        "idempotency_key": f"k{n}",
        "card_number": "5049",
        "amount": 1_000_000,
    }


def test_statement_follows_the_cursor_across_three_pages(requests_mock):
    pages = {
        None: {"entries": [entry(1), entry(2)], "next": "c1"},
        "c1": {"entries": [entry(3), entry(4)], "next": "c2"},
        "c2": {"entries": [entry(5)], "next": None},
    }

    def page(request, context):
        query = parse_qs(urlsplit(request.url).query)
        assert query["reference"] == ["wave-1/training"] and query["limit"] == ["2"]
        return pages[query.get("after", [None])[0]]

    route = requests_mock.get(ROOT + "/issuer/v1/statements", json=page)

    entries = list(make(IssuerClient, ROOT + "/issuer").statement("wave-1/training", page_size=2))

    assert [e.transfer_id for e in entries] == ["t-1", "t-2", "t-3", "t-4", "t-5"]
    assert entries[0] == StatementEntry("t-1", "k1", "5049", 1_000_000)
    assert route.call_count == 3


def test_statement_that_cannot_be_read_raises_partner_error(requests_mock):
    requests_mock.get(
        ROOT + "/issuer/v1/statements", json={"entries": [{**entry(1), "amount": "1e6"}]}
    )
    client = make(IssuerClient, ROOT + "/issuer", retry=RetrySettings(attempts=2))

    with pytest.raises(PartnerError) as caught:
        list(client.statement("wave-1/training"))

    assert caught.value.failure.error_class == "InvalidJSON"


def test_notifier_reads_accepted_and_rejected_messages(requests_mock):
    route = requests_mock.post(
        ROOT + "/notify/v1/messages",
        json={
            "results": [
                {"idempotency_key": "m1", "status": "ACCEPTED"},
                {"idempotency_key": "m2", "status": "REJECTED", "reason": "BAD_NUMBER"},
            ]
        },
    )
    message = {"channel": "sms", "to": "+6281234567890", "template": "selected", "params": {}}

    result = make(NotifierClient, ROOT + "/notify").send(
        [{"idempotency_key": "m1", **message}, {"idempotency_key": "m2", **message}]
    )

    assert result == {
        "m1": MessageResult("ACCEPTED", None),
        "m2": MessageResult("REJECTED", "BAD_NUMBER"),
    }
    assert route.last_request.json()["messages"][0]["template"] == "selected"


def test_wiring_builds_one_client_per_configured_partner():
    partners = build_partners(simulator_config("http://127.0.0.1:9"))

    assert [a.settings.id for a in partners.agencies][-1] == "manpower"
    assert sorted(partners.payments) == ["bank-a", "bank-b", "wallet-a", "wallet-b"]
    assert partners.issuer.settings.base_url == "http://127.0.0.1:9/issuer"
    assert partners.notifier.settings.id == "notifier"
    partners.close()
