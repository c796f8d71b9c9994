"""The issuer's revocations, the payment partners' disbursements, lost answers, a restart
from the journal, and the admin routes that change what a re-check finds."""

from datetime import datetime, timedelta

import pytest

from partners.simulator.lives import card_life
from partners.simulator.server import SimulatorThread
from partners.simulator.truth import DISBURSEMENT_FAILURES, disbursement_failure, person_truth
from tests.simulator.conftest import SEED, Partners, card_of, credit, creditable, niks

NOW = "2020-05-25T12:00:00+07:00"
REVOKE = "/issuer/v1/revocations"


def revocation(key: str, card: str, reason: str = "NO_TRAINING_IN_TIME") -> dict:
    return {
        "idempotency_key": key,
        "card_number": card,
        "reason": reason,
        "reference": "revoke/2020-05-25",
    }


def revoke(client: Partners, *items: dict) -> list[dict]:
    response = client.post(REVOKE, {"revocations": list(items)})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def purchase(eid: str, card: str, course: str, price: int, at: str, kind: str = "PURCHASED"):
    event = {"event_id": eid, "type": kind, "card_number": card, "course_id": course, "at": at}
    if kind != "COMPLETED":
        event["price"] = price
    return event


@pytest.fixture(scope="module")
def issuer():
    """Lives off: each test scripts its cards' events. Credited on 2020-04-20."""
    with SimulatorThread(SEED, lives="none") as sim:
        client = Partners(sim)
        client.set_clock("2020-04-20T09:00:00+07:00")
        cards = creditable(20, 20_000)
        body = {"credits": [credit(f"w1:{n}:training", n) for n in cards]}
        assert client.post("/issuer/v1/credits", body).status_code == 200
        client.set_clock(NOW)
        yield client, [card_of(n) for n in cards]
        client.http.close()


def script(client: Partners, *events: dict, platform: str = "marketplace-a") -> None:
    client.admin("training/events", {"platform": platform, "events": list(events)})


def test_a_card_never_used_is_revoked_with_its_whole_balance(issuer):
    client, cards = issuer
    (result,) = revoke(client, revocation("r:0", cards[0]))
    assert result == {
        "idempotency_key": "r:0",
        "status": "REVOKED",
        "amount_returned": 1_000_000,
        "replayed": False,
    }
    assert client.get("/issuer/v1/revocations/r:0").json() == result
    assert client.get("/issuer/v1/revocations/r:never").status_code == 404


def test_a_purchase_answers_card_used_and_blacklisting_returns_what_is_left(issuer):
    client, cards = issuer
    card = cards[1]
    script(client, purchase("p-1", card, "c-1", 300_000, "2020-04-22T10:00:00+07:00"))
    (used,) = revoke(client, revocation("r:1", card))
    assert (used["status"], used.get("amount_returned")) == ("CARD_USED", None)
    (closed,) = revoke(client, revocation("r:1b", card, "BLACKLISTED"))
    assert (closed["status"], closed["amount_returned"]) == ("REVOKED", 700_000)


def test_cancelled_and_future_purchases_do_not_count(issuer):
    client, cards = issuer
    card = cards[2]
    script(
        client,
        purchase("p-2", card, "c-2", 400_000, "2020-04-23T10:00:00+07:00"),
        purchase("p-3", card, "c-2", 400_000, "2020-04-24T10:00:00+07:00", "CANCELLED"),
        purchase("p-4", card, "c-3", 100_000, "2020-06-01T10:00:00+07:00"),  # after now
        platform="marketplace-b",
    )
    (result,) = revoke(client, revocation("r:2", card))
    assert (result["status"], result["amount_returned"]) == ("REVOKED", 1_000_000)


def test_a_card_used_at_the_issuer_answers_card_used(issuer):
    client, cards = issuer
    client.admin("issuer/card-used", {"card_number": cards[3]})
    (result,) = revoke(client, revocation("r:3", cards[3]))
    assert result["status"] == "CARD_USED"
    (blacklisted,) = revoke(client, revocation("r:3b", cards[3], "BLACKLISTED"))
    assert (blacklisted["status"], blacklisted["amount_returned"]) == ("REVOKED", 1_000_000)


def test_a_repeated_key_replays_and_a_changed_one_conflicts(issuer):
    client, cards = issuer
    item = revocation("r:4", cards[4])
    (first,) = revoke(client, item)
    (again,) = revoke(client, item)
    assert again == {**first, "replayed": True}
    (changed,) = revoke(client, {**item, "reason": "BLACKLISTED"})
    assert changed["status"] == "CONFLICT"
    assert client.get("/issuer/v1/revocations/r:4").json() == first
    listed = {r["idempotency_key"]: r for r in client.admin("issuer/revocations")["revocations"]}
    assert listed["r:4"] == {
        "idempotency_key": "r:4",
        "card_number": cards[4],
        "reason": "NO_TRAINING_IN_TIME",
        "status": "REVOKED",
        "amount_returned": 1_000_000,
        "times_received": 3,
    }
    # The card is closed: another key for it cannot return money again.
    (twice,) = revoke(client, revocation("r:4-other", cards[4], "BLACKLISTED"))
    assert twice["status"] == "CONFLICT"


def test_an_unknown_card_is_a_conflict_and_a_bad_reason_a_400(issuer):
    client, _ = issuer
    (result,) = revoke(client, revocation("r:5", "5049999999999999"))
    assert (result["status"], result["reason"]) == ("CONFLICT", "UNKNOWN_CARD")
    bad = client.post(REVOKE, {"revocations": [revocation("r:6", "5049", "BORED")]})
    assert bad.status_code == 400


def test_a_revoked_card_s_life_stops_at_the_revocation():
    with SimulatorThread(SEED) as sim:
        client = Partners(sim)
        start = datetime.fromisoformat("2020-04-20T09:00:00+07:00")
        client.set_clock(start.isoformat())
        candidates = creditable(300, 30_000)
        day0 = start.timestamp()

        def life(nik):
            return card_life(SEED, card_of(nik), 1_000_000, day0)

        late = next(n for n in candidates if life(n)[0] and life(n)[0][0][0] > day0 + 3 * 86400)
        used = next(n for n in candidates if not life(n)[0] and life(n)[1])
        early = next(n for n in candidates if n != late and len(life(n)[0]) >= 2)
        body = {"credits": [credit(f"k:{n}", n) for n in (late, used, early)]}
        assert client.post("/issuer/v1/credits", body).status_code == 200
        first_at = datetime.fromtimestamp(life(early)[0][0][0]).astimezone(start.tzinfo)
        client.set_clock((start + timedelta(days=2)).isoformat())
        (no_life,) = revoke(client, revocation("k:late", card_of(late), "BLACKLISTED"))
        (at_issuer,) = revoke(client, revocation("k:used", card_of(used)))
        assert (no_life["status"], no_life["amount_returned"]) == ("REVOKED", 1_000_000)
        assert at_issuer["status"] == "CARD_USED"
        # Revoked one second after its first purchase: that purchase is still delivered
        # (late), nothing after it is.
        client.set_clock((first_at + timedelta(seconds=1)).isoformat())
        (spent,) = revoke(client, revocation("k:early", card_of(early), "BLACKLISTED"))
        assert spent["amount_returned"] == 1_000_000 - life(early)[0][0][5]
        client.set_clock("2021-01-01T00:00:00+07:00")
        events = [e for p in ("marketplace-a", "marketplace-b") for e in client.read_feed(p)[0]]
        by_card = {}
        for e in events:
            by_card.setdefault(e["card_number"], set()).add(e["event_id"])
        assert card_of(late) not in by_card
        assert len(by_card[card_of(early)]) == 1


PAY = "/payment/bank-a/v1/disbursements"


def disbursement(key: str, nik: str, amount: int = 600_000, account: str = "") -> dict:
    return {
        "idempotency_key": key,
        "account": account or "08" + nik[-10:],
        "nik": nik,
        "amount": amount,
        "currency": "IDR",
        "reference": "payout-2020-05-26",
    }


def paying(count: int, start: int = 0) -> list[str]:
    return [n for n in niks(count * 2, start) if not disbursement_failure(SEED, n, "08" + n[-10:])][
        :count
    ]


def pay(client: Partners, *items: dict, provider: str = "bank-a") -> list[dict]:
    response = client.post(f"/payment/{provider}/v1/disbursements", {"disbursements": list(items)})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_a_disbursement_completes_once_and_is_in_the_statement(partners):
    nik_list = paying(3, 40_000)
    items = [disbursement(f"w1:{n}:incentive:1", n) for n in nik_list]
    results = pay(partners, *items)
    assert [r["status"] for r in results] == ["COMPLETED"] * 3
    assert all(r["transfer_id"].startswith("d-") and r["replayed"] is False for r in results)
    assert pay(partners, items[0]) == [{**results[0], "replayed": True}]
    key = items[0]["idempotency_key"]
    assert partners.get(f"{PAY}/{key}").json() == results[0]
    assert partners.get(f"{PAY}/never").status_code == 404
    assert partners.get(f"/payment/bank-b/v1/disbursements/{key}").status_code == 404
    page = partners.get(
        "/payment/bank-a/v1/statements", params={"reference": "payout-2020-05-26", "limit": 2}
    ).json()
    entries = page["entries"]
    while page["next"] is not None:
        page = partners.get(
            "/payment/bank-a/v1/statements",
            params={"reference": "payout-2020-05-26", "after": page["next"]},
        ).json()
        entries += page["entries"]
    mine = [e for e in entries if e["idempotency_key"] in {i["idempotency_key"] for i in items}]
    assert mine == [
        {"transfer_id": r["transfer_id"], "idempotency_key": i["idempotency_key"],
         "account": i["account"], "amount": 600_000}
        for i, r in zip(items, results, strict=True)
    ]  # fmt: skip


def test_failing_accounts_fail_and_a_changed_key_conflicts(partners):
    seeded = next(n for n in niks(5000, 50_000) if disbursement_failure(SEED, n, "08" + n[-10:]))
    (failed,) = pay(partners, disbursement(f"f:{seeded}", seeded))
    assert failed["status"] == "FAILED" and failed["reason"] in DISBURSEMENT_FAILURES
    assert "transfer_id" not in failed
    other = paying(1, 60_000)[0]
    partners.admin(
        "payment/bank-a/fail", {"account": "08" + other[-10:], "reason": "ACCOUNT_CLOSED"}
    )
    (closed,) = pay(partners, disbursement(f"f:{other}", other))
    assert (closed["status"], closed["reason"]) == ("FAILED", "ACCOUNT_CLOSED")
    assert pay(partners, disbursement(f"f:{other}", other))[0]["replayed"] is True
    (conflict,) = pay(partners, disbursement(f"f:{other}", other, amount=50_000))
    assert conflict["status"] == "CONFLICT"
    assert (
        partners.post("/payment/bank-z/v1/disbursements", {"disbursements": []}).status_code == 404
    )
    bad = partners.post(PAY, {"disbursements": [{**disbursement("b", other), "amount": "1"}]})
    assert bad.status_code == 400


def test_a_lost_answer_moved_the_money_once_and_the_lookup_finds_it(partners):
    nik = paying(1, 70_000)[0]
    item = disbursement(f"lost:{nik}", nik)
    partners.set_faults({"partners": {"bank-a": {"rate_lost_answer": 1.0}}})
    assert partners.post(PAY, {"disbursements": [item]}).status_code == 503
    # A call that moves nothing never loses its answer.
    verify = {"records": [{"ref": "a", "account": item["account"], "nik": nik}]}
    assert partners.post("/payment/bank-a/v1/accounts/verify", verify).status_code == 200
    found = partners.get(f"{PAY}/lost:{nik}")
    assert found.status_code == 200 and found.json()["status"] == "COMPLETED"
    partners.set_faults({})
    (again,) = pay(partners, item)
    assert again == {**found.json(), "replayed": True}
    listed = [
        d
        for d in partners.admin("payment/bank-a/disbursements")["disbursements"]
        if d["idempotency_key"] == f"lost:{nik}"
    ]
    assert listed == [
        {"idempotency_key": f"lost:{nik}", "account": item["account"], "nik": nik,
         "amount": 600_000, "status": "COMPLETED", "reason": None,
         "transfer_id": again["transfer_id"], "times_received": 2}
    ]  # fmt: skip


def test_a_lost_revocation_answer_closed_the_card(partners):
    nik = creditable(1, 80_000)[0]
    assert partners.post("/issuer/v1/credits", {"credits": [credit(f"c:{nik}", nik)]}).ok
    partners.admin("issuer/card-used", {"card_number": card_of(nik)})
    partners.set_faults({"partners": {"card-issuer": {"rate_lost_answer": 1.0}}})
    item = revocation(f"lost-r:{nik}", card_of(nik), "BLACKLISTED")
    assert partners.post(REVOKE, {"revocations": [item]}).status_code == 503
    partners.set_faults({})
    assert partners.get(f"/issuer/v1/revocations/lost-r:{nik}").json()["status"] == "REVOKED"


def test_a_restarted_simulator_keeps_revocations_disbursements_and_admin_changes(tmp_path):
    state = tmp_path / "state.jsonl"
    nik = creditable(1, 90_000)[0]
    payee = paying(1, 91_000)[0]
    listed, dead = "3171010101990001", "3171010101990002"

    def feed(client: Partners) -> list:
        return [e for p in ("marketplace-a", "marketplace-b") for e in client.read_feed(p)[0]]

    with SimulatorThread(SEED, state_path=state) as sim:
        client = Partners(sim)
        client.set_clock("2020-04-20T09:00:00+07:00")
        others = creditable(50, 92_000)
        body = {"credits": [credit(f"c:{n}", n) for n in [nik, *others]]}
        assert client.post("/issuer/v1/credits", body).ok
        client.set_clock(NOW)
        (revoked,) = revoke(client, revocation("keep:r", card_of(nik), "BLACKLISTED"))
        (paid,) = pay(client, disbursement("keep:d", payee))
        client.admin("payment/bank-b/fail", {"account": "0800", "reason": "LIMIT_EXCEEDED"})
        client.admin("agencies/soe/list", {"nik": listed})
        client.admin("registry/deceased", {"nik": dead})
        before = feed(client)
        assert before
    with SimulatorThread(SEED, state_path=state) as sim:
        client = Partners(sim)
        assert client.admin("clock")["now"].startswith("2020-05-25T12:0")
        assert revoke(client, revocation("keep:r", card_of(nik), "BLACKLISTED")) == [
            {**revoked, "replayed": True}
        ]
        assert pay(client, disbursement("keep:d", payee)) == [{**paid, "replayed": True}]
        fresh = paying(1, 93_000)[0]
        (next_paid,) = pay(client, disbursement("keep:d2", fresh))
        assert int(next_paid["transfer_id"][2:]) == int(paid["transfer_id"][2:]) + 1
        (failed,) = pay(client, disbursement("keep:d3", fresh, account="0800"), provider="bank-b")
        assert failed["reason"] == "LIMIT_EXCEEDED"
        assert feed(client) == before
        check = client.post(
            "/agency/soe/v1/screening/check", {"records": [{"ref": "a", "nik": listed}]}
        )
        assert check.json()["results"][0]["listed"] is True
        who = client.post("/registry/v1/identity/verify", {"records": [{"ref": "a", "nik": dead}]})
        assert who.json()["results"][0]["deceased"] is True


def test_admin_listing_and_death_change_the_re_checks_from_then_on(partners):
    nik = next(
        n
        for n in niks(2000, 95_000)
        if person_truth(SEED, n).registry_fate == "NIK_NOT_FOUND"
        and person_truth(SEED, n).excluded_category is None
    )
    records = {"records": [{"ref": "a", "nik": nik}]}
    check = "/agency/civil-service/v1/screening/check"
    assert partners.post(check, records).json()["results"][0]["listed"] is False
    partners.admin("agencies/civil-service/list", {"nik": nik})
    assert partners.post(check, records).json()["results"][0]["listed"] is True
    assert (
        partners.post("/agency/education/v1/screening/check", records).json()["results"][0][
            "listed"
        ]
        is False
    )
    verify = "/registry/v1/identity/verify"
    assert partners.post(verify, records).json()["results"][0]["found"] is False
    partners.admin("registry/deceased", {"nik": nik})
    answer = partners.post(verify, records).json()["results"][0]
    assert (answer["found"], answer["deceased"]) == (True, True)
    bad = partners.http.post(partners.base_url + "/_admin/registry/deceased", json={"nik": 1})
    assert bad.status_code == 400


def test_the_new_admin_routes_are_refused_off_loopback_without_the_token():
    import asyncio

    import httpx

    from partners.simulator.server import create_app

    app = create_app(SEED, admin_token="t" * 20)
    routes = [
        ("GET", "/_admin/clock", None),
        ("POST", "/_admin/clock", {"now": NOW}),
        ("POST", "/_admin/lives", {"mode": "none"}),
        ("POST", "/_admin/training/events", {"platform": "marketplace-a", "events": []}),
        ("POST", "/_admin/issuer/card-used", {"card_number": "5049"}),
        ("GET", "/_admin/issuer/revocations", None),
        ("POST", "/_admin/payment/bank-a/fail", {"account": "1", "reason": "ACCOUNT_CLOSED"}),
        ("GET", "/_admin/payment/bank-a/disbursements", None),
        ("POST", "/_admin/agencies/soe/list", {"nik": "1"}),
        ("POST", "/_admin/registry/deceased", {"nik": "1"}),
    ]

    async def codes(client: tuple) -> list[int]:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            return [(await http.request(m, p, json=b)).status_code for m, p, b in routes]

    assert asyncio.run(codes(("203.0.113.7", 4000))) == [403] * len(routes)
    assert asyncio.run(codes(("127.0.0.1", 4000))) == [200] * len(routes)
    assert app.state.simulator.training.lives == "none"


def test_the_simulator_process_takes_lives_none():
    from partners.simulator.server import SimulatorProcess

    nik = creditable(1, 99_000)[0]
    with SimulatorProcess(SEED, lives="none") as sim:
        client = Partners(sim)
        client.set_clock("2020-04-20T09:00:00+07:00")
        assert client.post("/issuer/v1/credits", {"credits": [credit("p:1", nik)]}).ok
        client.set_clock("2020-12-01T00:00:00+07:00")
        assert client.read_feed("marketplace-a")[0] == []
        assert client.read_feed("marketplace-b")[0] == []
        (result,) = revoke(client, revocation("p:r", card_of(nik)))
        assert (result["status"], result["amount_returned"]) == ("REVOKED", 1_000_000)
