"""Every fault kind is observable over HTTP and reproducible from the fault seed."""

import time

import pytest
import requests

from partners.simulator.faults import FaultsError, faults_from_dict, load_faults
from partners.simulator.truth import person_truth
from tests.simulator.conftest import SEED, niks

IDENTITY = "/registry/v1/identity/verify"


def records(count: int, start: int = 0) -> dict:
    return {"records": [{"ref": nik, "nik": nik} for nik in niks(count, start)]}


def outcome(partners, path: str = IDENTITY, body: dict | None = None, timeout: float = 5) -> str:
    """One call, summarised: the status code, or the kind of transport/body failure."""
    try:
        response = partners.post(path, body or records(20), timeout=timeout)
    except requests.Timeout:
        return "timeout"
    except requests.ConnectionError:
        return "drop"
    if response.status_code != 200:
        return str(response.status_code)
    try:
        response.json()
    except ValueError:
        return "unreadable"
    return "200"


def test_rate_429_answers_retry_after(partners):
    partners.set_faults({"default": {"rate_429": 1.0, "retry_after_s": 7}})
    response = partners.post(IDENTITY, records(3))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_rate_5xx_answers_server_errors_of_several_kinds(partners):
    partners.set_faults({"default": {"rate_5xx": 1.0}})
    codes = {outcome(partners, body=records(1, n)) for n in range(40)}
    assert codes == {"500", "502", "503", "504"}


def test_rate_drop_closes_the_connection_without_an_answer(partners):
    partners.set_faults({"default": {"rate_drop": 1.0}})
    with pytest.raises(requests.ConnectionError):
        partners.post(IDENTITY, records(3))
    partners.set_faults({})
    assert partners.post(IDENTITY, records(3)).status_code == 200


def test_rate_timeout_answers_after_the_client_gave_up(partners):
    partners.set_faults({"default": {"rate_timeout": 1.0, "timeout_s": 1.0}})
    started = time.monotonic()
    assert outcome(partners, timeout=0.2) == "timeout"
    assert time.monotonic() - started < 1.0


def test_latency_is_added_to_every_call(partners):
    partners.set_faults({"partners": {"registry": {"latency_ms": 150}}})
    started = time.monotonic()
    partners.post(IDENTITY, records(1))
    assert time.monotonic() - started >= 0.15


def test_down_partner_answers_503_and_others_still_work(partners):
    partners.set_faults({"partners": {"registry": {"down": True}}})
    assert partners.post(IDENTITY, records(1)).status_code == 503
    other = partners.post("/agency/education/v1/screening/check", records(1))
    assert other.status_code == 200


@pytest.mark.parametrize("fault", ["rate_bad_json", "rate_truncated_json"])
def test_unreadable_bodies_come_with_status_200(partners, fault):
    partners.set_faults({"default": {fault: 1.0}})
    response = partners.post(IDENTITY, records(10))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def results_of(partners, body: dict) -> list[dict]:
    response = partners.post(IDENTITY, body)
    assert response.status_code == 200
    return response.json()["results"]


def test_missing_results_leave_some_items_unanswered(partners):
    partners.set_faults({"default": {"rate_missing_result": 0.3}})
    body = records(200)
    answered = {r["ref"] for r in results_of(partners, body)}
    asked = {r["ref"] for r in body["records"]}
    assert answered < asked and 20 < len(asked - answered) < 100


def test_duplicate_results_repeat_an_item(partners):
    partners.set_faults({"default": {"rate_duplicate_result": 0.1}})
    refs = [r["ref"] for r in results_of(partners, records(200))]
    assert len(refs) > len(set(refs)) == 200


def test_unknown_key_adds_a_result_nobody_asked_for(partners):
    partners.set_faults({"default": {"rate_unknown_key": 1.0}})
    body = records(5)
    refs = {r["ref"] for r in results_of(partners, body)}
    assert len(refs - {r["ref"] for r in body["records"]}) == 1


def test_unknown_status_values_appear_per_partner(partners):
    partners.set_faults({"default": {"rate_unknown_status": 1.0}})
    assert {r["found"] for r in results_of(partners, records(5))} == {"maybe"}
    screening = partners.post("/agency/education/v1/screening/check", records(5)).json()
    assert {r["listed"] for r in screening["results"]} == {"maybe"}
    accounts = partners.post(
        "/payment/bank-a/v1/accounts/verify",
        {"records": [{"ref": "a", "nik": "1", "account": "0812"}]},
    ).json()
    assert accounts["results"][0]["status"] == "WEIRD"


def test_lost_answer_applies_the_credit_then_answers_503(partners):
    nik = next(n for n in niks(500, 7000) if not person_truth(SEED, n).credit_rejected)
    body = {
        "credits": [
            {
                "idempotency_key": f"lost:{nik}",
                "card_number": "5049000011112222",
                "nik": nik,
                "amount": 1_000_000,
                "currency": "IDR",
                "reference": "wave-lost",
            }
        ]
    }
    partners.set_faults({"partners": {"card-issuer": {"rate_lost_answer": 1.0}}})
    assert partners.post("/issuer/v1/credits", body).status_code == 503
    partners.set_faults({})
    assert partners.get(f"/issuer/v1/credits/lost:{nik}").json()["status"] == "APPLIED"
    retried = partners.post("/issuer/v1/credits", body).json()["results"][0]
    assert retried["status"] == "APPLIED" and retried["replayed"] is True


def test_max_rps_answers_429_above_the_rate(partners):
    partners.set_faults({"partners": {"registry": {"max_rps": 2}}})
    codes = [partners.post(IDENTITY, records(1)).status_code for _ in range(6)]
    assert codes[:2] == [200, 200] and 429 in codes
    limited = partners.post(IDENTITY, records(1))
    assert limited.status_code != 429 or int(limited.headers["Retry-After"]) >= 1


MIXED = {
    "seed": "mixed",
    "default": {
        "rate_429": 0.15,
        "rate_5xx": 0.15,
        "rate_drop": 0.1,
        "rate_bad_json": 0.1,
        "rate_truncated_json": 0.1,
    },
}


def sequence(partners, faults: dict) -> list[str]:
    # The same bodies, some repeated as a client's retries would repeat them.
    partners.set_faults(faults)
    bodies = [records(3, n % 12) for n in range(36)]
    return [outcome(partners, body=body) for body in bodies]


def test_same_requests_and_fault_seed_give_the_same_faults(partners):
    first = sequence(partners, MIXED)
    second = sequence(partners, MIXED)
    other_seed = sequence(partners, {**MIXED, "seed": "another"})
    assert first == second
    assert first != other_seed
    assert {"200", "429", "drop", "unreadable"} <= set(first)


def test_a_retried_identical_request_gets_the_next_decision(partners):
    partners.set_faults({"default": {"rate_5xx": 0.5}})
    body = records(4)
    outcomes = [outcome(partners, body=body) for _ in range(30)]
    assert "200" in outcomes and len(set(outcomes)) > 1


def test_admin_faults_replace_the_configuration_at_runtime(partners):
    partners.set_faults({"default": {"down": True}})
    assert partners.post(IDENTITY, records(1)).status_code == 503
    partners.set_faults({})
    assert partners.post(IDENTITY, records(1)).status_code == 200
    refused = partners.http.post(
        partners.base_url + "/_admin/faults", json={"default": {"rate": 1}}
    )
    assert refused.status_code == 400 and "default.rate" in refused.text


def test_faults_file_is_read_and_partner_tables_override_the_default(tmp_path):
    path = tmp_path / "faults.toml"
    path.write_text(
        'seed = "s1"\n[default]\nlatency_ms = 5\nrate_5xx = 0.1\n'
        '[partners.card-issuer]\nrate_lost_answer = 0.2\n[partners."civil-service"]\nrate_5xx = 0\n'
    )
    config = load_faults(path)
    assert config.seed == "s1"
    issuer = config.for_partner("card-issuer")
    assert (issuer.latency_ms, issuer.rate_5xx, issuer.rate_lost_answer) == (5, 0.1, 0.2)
    assert config.for_partner("civil-service").rate_5xx == 0
    assert config.for_partner("registry").rate_5xx == 0.1


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"default": {"rate_5xxx": 0.1}}, "default.rate_5xxx"),
        ({"partners": {"registry": {"laetncy_ms": 1}}}, "partners.registry.laetncy_ms"),
        ({"defaults": {}}, "defaults"),
        ({"default": {"rate_429": 1.5}}, "default.rate_429"),
    ],
)
def test_unknown_keys_and_bad_values_are_refused_by_name(data, named):
    with pytest.raises(FaultsError, match=named):
        faults_from_dict(data)
