"""The card issuer applies a key at most once; the gateway accepts a key once."""

from partners.simulator.server import SimulatorThread
from partners.simulator.truth import person_truth
from tests.simulator.conftest import AUTH, SEED, niks


def credit(key: str, nik: str, amount: int = 1_000_000, reference: str = "wave-1/training") -> dict:
    return {
        "idempotency_key": key,
        "card_number": "5049" + nik[-12:],
        "nik": nik,
        "amount": amount,
        "currency": "IDR",
        "reference": reference,
    }


def applied_nik(start: int = 0) -> str:
    return next(n for n in niks(2000, start) if not person_truth(SEED, n).credit_rejected)


def test_same_key_twice_is_applied_once_and_replayed(partners):
    nik = applied_nik()
    body = {"credits": [credit("replay:1", nik)]}
    first = partners.post("/issuer/v1/credits", body).json()["results"][0]
    applied_before = partners.stats()["credits_applied"]
    second = partners.post("/issuer/v1/credits", body).json()["results"][0]
    assert first["status"] == "APPLIED" and first["replayed"] is False
    assert first["transfer_id"].startswith("t-") and len(first["transfer_id"]) == 11
    assert second == {**first, "replayed": True}
    assert partners.stats()["credits_applied"] == applied_before


def test_same_key_with_a_different_body_is_a_conflict_and_keeps_the_original(partners):
    nik = applied_nik()
    original = partners.post("/issuer/v1/credits", {"credits": [credit("conflict:1", nik)]})
    changed = credit("conflict:1", nik, amount=2_000_000)
    conflict = partners.post("/issuer/v1/credits", {"credits": [changed]}).json()["results"][0]
    assert conflict["status"] == "CONFLICT"
    stored = partners.get("/issuer/v1/credits/conflict:1").json()
    assert stored == original.json()["results"][0]


def test_issuer_rejects_a_blocked_card_for_good(partners):
    nik = next(n for n in niks(20000) if person_truth(SEED, n).credit_rejected)
    body = {"credits": [credit("blocked:1", nik)]}
    first = partners.post("/issuer/v1/credits", body).json()["results"][0]
    again = partners.post("/issuer/v1/credits", body).json()["results"][0]
    assert (first["status"], first["reason"]) == ("REJECTED", "CARD_BLOCKED")
    assert again["status"] == "REJECTED" and again["replayed"] is True


def test_get_credit_by_key_is_200_when_received_else_404(partners):
    partners.post("/issuer/v1/credits", {"credits": [credit("lookup:1", applied_nik())]})
    assert partners.get("/issuer/v1/credits/lookup:1").json()["status"] == "APPLIED"
    assert partners.get("/issuer/v1/credits/lookup:never").status_code == 404


def test_statement_lists_applied_credits_of_a_reference_in_pages(partners):
    batch = [n for n in niks(60, 5000) if not person_truth(SEED, n).credit_rejected][:25]
    credits = [credit(f"stmt:{n}", n, reference="wave-9/training") for n in batch]
    results = partners.post("/issuer/v1/credits", {"credits": credits}).json()["results"]
    partners.post("/issuer/v1/credits", {"credits": [credit("other:1", applied_nik())]})
    entries, cursor, pages = [], None, 0
    while True:
        params = {"reference": "wave-9/training", "limit": 10}
        if cursor:
            params["after"] = cursor
        page = partners.get("/issuer/v1/statements", params=params).json()
        entries += page["entries"]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 3
    assert [e["idempotency_key"] for e in entries] == [c["idempotency_key"] for c in credits]
    assert [e["transfer_id"] for e in entries] == [r["transfer_id"] for r in results]
    assert {e["amount"] for e in entries} == {1_000_000}
    empty = partners.get("/issuer/v1/statements", params={"reference": "nothing"}).json()
    assert empty == {"entries": [], "next": None}


def message(key: str) -> dict:
    return {
        "idempotency_key": key,
        "channel": "sms",
        "to": "+6281234567890",
        "template": "balance_credited",
        "params": {"card_number": "5049"},
    }


def test_gateway_accepts_a_key_once_and_counts_repeats(partners):
    nik = next(n for n in niks(2000) if not person_truth(SEED, n).sms_rejected)
    before = partners.stats()
    body = {"messages": [message(f"w1:{nik}:balance_credited")]}
    answers = [partners.post("/notify/v1/messages", body).json()["results"] for _ in range(3)]
    after = partners.stats()
    assert all(
        a == [{"idempotency_key": f"w1:{nik}:balance_credited", "status": "ACCEPTED"}]
        for a in answers
    )
    assert after["messages_accepted"] == before["messages_accepted"] + 1
    assert after["messages_duplicate_keys"] == before["messages_duplicate_keys"] + 1


def test_gateway_rejects_unreachable_numbers(partners):
    nik = next(n for n in niks(20000) if person_truth(SEED, n).sms_rejected)
    body = {"messages": [message(f"w1:{nik}:balance_credited")]}
    result = partners.post("/notify/v1/messages", body).json()["results"][0]
    assert (result["status"], result["reason"]) == ("REJECTED", "UNREACHABLE")


def test_a_restarted_simulator_keeps_credits_and_messages(tmp_path):
    import requests

    state = tmp_path / "state.jsonl"
    nik = applied_nik()
    body = {"credits": [credit("persist:1", nik)]}
    with SimulatorThread(SEED, state_path=state) as sim:
        first = requests.post(f"{sim.base_url}/issuer/v1/credits", json=body, headers=AUTH)
        requests.post(
            f"{sim.base_url}/notify/v1/messages", json={"messages": [message("m:1")]}, headers=AUTH
        )
    with SimulatorThread(SEED, state_path=state) as sim:
        again = requests.post(f"{sim.base_url}/issuer/v1/credits", json=body, headers=AUTH)
        fresh = requests.post(
            f"{sim.base_url}/issuer/v1/credits",
            json={"credits": [credit("persist:2", applied_nik(3000))]},
            headers=AUTH,
        )
        stats = requests.get(f"{sim.base_url}/_admin/stats").json()
    assert again.json()["results"][0] == {**first.json()["results"][0], "replayed": True}
    assert fresh.json()["results"][0]["transfer_id"] == "t-000000002"
    assert (stats["credits_applied"], stats["messages_accepted"]) == (2, 1)


def test_simulator_process_serves_and_stops(tmp_path):
    import requests

    from partners.simulator.server import SimulatorProcess

    faults = tmp_path / "faults.toml"
    faults.write_text("[partners.registry]\ndown = true\n")
    with SimulatorProcess(SEED, faults_path=faults) as sim:
        down = requests.post(
            f"{sim.base_url}/registry/v1/identity/verify", json={"records": []}, headers=AUTH
        )
        up = requests.post(
            f"{sim.base_url}/agency/soe/v1/screening/check", json={"records": []}, headers=AUTH
        )
        process = sim.process
    assert (down.status_code, up.status_code) == (503, 200)
    assert process.returncode is not None


def test_the_gateway_keeps_what_it_was_sent_so_a_sign_in_code_can_be_read(partners):
    def login(key: str, to: str, code: str) -> dict:
        return {
            "idempotency_key": key,
            "channel": "sms",
            "to": to,
            "template": "login_code",
            "params": {"code": code},
        }

    start = partners.get("/_admin/messages", params={"last": 1}).json()["messages"]
    after = start[-1]["seq"] if start else 0
    body = {"messages": [login("login:a", "+6281100000001", "111111"),
                         login("login:b", "+6281100000002", "222222")]}  # fmt: skip
    assert partners.post("/notify/v1/messages", body).status_code == 200
    partners.post("/notify/v1/messages", body)  # a repeat is not received twice
    got = partners.get(
        "/_admin/messages", params={"template": "login_code", "after": after, "last": 0}
    ).json()["messages"]
    assert [(m["to"], m["params"]["code"]) for m in got] == [
        ("+6281100000001", "111111"),
        ("+6281100000002", "222222"),
    ]
    one = partners.get(
        "/_admin/messages", params={"to": "+6281100000002", "after": after, "last": 1}
    ).json()["messages"]
    assert [m["params"]["code"] for m in one] == ["222222"]
    assert partners.get("/_admin/messages", params={"last": "x"}).status_code == 400
