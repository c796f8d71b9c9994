"""Each partner route answers per partner-api.md, from the truth of each NIK."""

import uuid

from partners.simulator.truth import (
    AGENCY_CATEGORIES,
    account_status,
    agency_listed,
    identity_result,
    person_truth,
)
from tests.simulator.conftest import SEED, niks


def identity_records(nik_list: list[str]) -> dict:
    return {
        "records": [
            {
                "ref": f"r{i}",
                "nik": nik,
                "full_name": "Siti Aminah",
                "birth_date": "1990-01-01",
                "kk_number": "3171010101100001",
            }
            for i, nik in enumerate(nik_list)
        ]
    }


def test_registry_answers_each_nik_from_its_truth(partners):
    batch = niks(400)
    response = partners.post("/registry/v1/identity/verify", identity_records(batch))
    assert response.status_code == 200
    results = {r["ref"]: r for r in response.json()["results"]}
    assert len(results) == 400
    fates = set()
    for i, nik in enumerate(batch):
        truth = person_truth(SEED, nik)
        fates.add(truth.registry_fate)
        assert results[f"r{i}"] == {"ref": f"r{i}", **identity_result(truth)}
    assert {"OK", "NIK_NOT_FOUND", "BIRTH_DATE_MISMATCH", "NAME_MISMATCH", "KK_MISMATCH"} <= fates


def test_not_found_answers_only_ref_and_found(partners):
    nik = next(n for n in niks(500) if person_truth(SEED, n).registry_fate == "NIK_NOT_FOUND")
    response = partners.post("/registry/v1/identity/verify", identity_records([nik]))
    assert response.json()["results"] == [{"ref": "r0", "found": False}]


def test_each_agency_lists_only_its_own_category(partners):
    batch = niks(600)
    records = {"records": [{"ref": nik, "nik": nik} for nik in batch]}
    for agency in [*AGENCY_CATEGORIES, "manpower"]:
        response = partners.post(f"/agency/{agency}/v1/screening/check", records)
        assert response.status_code == 200
        listed = {r["ref"]: r["listed"] for r in response.json()["results"]}
        expected = {nik: agency_listed(person_truth(SEED, nik), agency) for nik in batch}
        assert listed == expected
        assert any(expected.values()), agency


def test_unknown_agency_lists_nobody(partners):
    records = {"records": [{"ref": nik, "nik": nik} for nik in niks(300)]}
    response = partners.post("/agency/tax-office/v1/screening/check", records)
    assert {r["listed"] for r in response.json()["results"]} == {False}


def test_payment_partner_answers_account_status_and_unknown_provider_knows_nobody(partners):
    batch = niks(300)
    records = {
        "records": [
            {"ref": nik, "account": "081234567890", "nik": nik, "phone": "+6281234567890"}
            for nik in batch
        ]
    }
    response = partners.post("/payment/bank-a/v1/accounts/verify", records)
    statuses = {r["ref"]: r["status"] for r in response.json()["results"]}
    assert statuses == {nik: account_status(person_truth(SEED, nik), "bank-a") for nik in batch}
    assert {"VERIFIED", "NOT_FOUND", "NOT_KYC"} <= set(statuses.values())
    unknown = partners.post("/payment/bank-z/v1/accounts/verify", records)
    assert {r["status"] for r in unknown.json()["results"]} == {"NOT_FOUND"}


def test_every_answer_echoes_the_request_id(partners):
    request_id = str(uuid.uuid4())
    headers = {"X-Request-Id": request_id}
    ok = partners.post("/registry/v1/identity/verify", identity_records(niks(1)), headers=headers)
    bad = partners.post("/registry/v1/identity/verify", {"nope": 1}, headers=headers)
    unauthorized = partners.http.post(
        partners.base_url + "/notify/v1/messages", json={"messages": []}, headers=headers
    )
    assert [r.status_code for r in (ok, bad, unauthorized)] == [200, 400, 401]
    assert {r.headers["X-Request-Id"] for r in (ok, bad, unauthorized)} == {request_id}


def test_more_items_than_batch_size_is_413(partners):
    assert (
        partners.post("/registry/v1/identity/verify", identity_records(niks(1001))).status_code
        == 413
    )
    assert (
        partners.post("/registry/v1/identity/verify", identity_records(niks(1000))).status_code
        == 200
    )
    partners.set_faults({"partners": {"registry": {"batch_size": 10}}})
    assert (
        partners.post("/registry/v1/identity/verify", identity_records(niks(11))).status_code == 413
    )


def test_missing_or_wrong_credentials_are_401(partners):
    url = partners.base_url + "/registry/v1/identity/verify"
    body = identity_records(niks(1))
    assert partners.http.post(url, json=body).status_code == 401
    assert (
        partners.http.post(url, json=body, headers={"Authorization": "Bearer "}).status_code == 401
    )
    assert (
        partners.http.post(url, json=body, headers={"Authorization": "Basic x"}).status_code == 401
    )
    partners.set_faults({"partners": {"registry": {"api_key": "right"}}})
    wrong = partners.http.post(url, json=body, headers={"Authorization": "Bearer test-key"})
    right = partners.http.post(url, json=body, headers={"Authorization": "Bearer right"})
    assert (wrong.status_code, right.status_code) == (401, 200)


def test_malformed_bodies_are_400(partners):
    url = partners.base_url + "/registry/v1/identity/verify"
    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    for body in [
        b"not json",
        b"[]",
        b'{"records": {}}',
        b'{"records": [{"nik": "1"}]}',
        b'{"records": [{"ref": "a", "nik": 5}]}',
        b'{"records": [{"ref": "a", "nik": "1"}, {"ref": "a", "nik": "2"}]}',
    ]:
        assert partners.http.post(url, data=body, headers=headers).status_code == 400, body
    credit = {
        "idempotency_key": "k",
        "card_number": "5049",
        "nik": "1",
        "amount": 1.5,
        "currency": "IDR",
        "reference": "w",
    }
    assert partners.post("/issuer/v1/credits", {"credits": [credit]}).status_code == 400


def test_stats_count_calls_and_items_per_partner(partners):
    partners.http.post(partners.base_url + "/_admin/reset-stats")
    partners.post("/registry/v1/identity/verify", identity_records(niks(7)))
    partners.post("/agency/education/v1/screening/check", {"records": [{"ref": "a", "nik": "1"}]})
    partners.post("/agency/education/v1/screening/check", {"records": []})
    stats = partners.stats()
    assert stats["calls"] == {"registry": 1, "education": 2}
    assert stats["items"] == {"registry": 7, "education": 1}
