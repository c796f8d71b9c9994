"""The training platforms' feeds: seeded card lives gated by the simulated clock, read page
by page with cursors; scripted events when lives are off."""

from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from partners.simulator.lives import (
    CANCELLED,
    COMPLETED,
    FIRST_TRAINING_DAYS,
    MIN_PRICE,
    PURCHASED,
    WIB,
    card_life,
)
from partners.simulator.server import SimulatorThread
from partners.simulator.truth import TRAINING_PLATFORMS
from tests.simulator.conftest import SEED, Partners, card_of, credit, creditable

CREDITED_AT = "2020-04-20T09:00:00+07:00"
DAY0 = datetime.fromisoformat(CREDITED_AT).timestamp()
LATER = "2020-11-30T00:00:00+07:00"  # past every life


def credit_all(client: Partners, nik_list: list[str], prefix: str = "w1") -> None:
    for i in range(0, len(nik_list), 500):
        body = {"credits": [credit(f"{prefix}:{n}", n) for n in nik_list[i : i + 500]]}
        results = client.post("/issuer/v1/credits", body).json()["results"]
        assert {r["status"] for r in results} == {"APPLIED"}


def everything(client: Partners, limit: int = 10_000) -> dict[str, list[dict]]:
    return {p: client.read_feed(p, limit=limit)[0] for p in TRAINING_PLATFORMS}


@pytest.fixture(scope="module")
def lived():
    """A simulator whose 400 cards were credited at CREDITED_AT, and the clock then
    moved past their lives."""
    with SimulatorThread(SEED) as sim:
        client = Partners(sim)
        client.set_clock(CREDITED_AT)
        cards = creditable(400)
        credit_all(client, cards)
        client.set_clock(LATER)
        yield client, cards
        client.http.close()


def test_each_card_s_life_is_in_the_feeds_once_and_unknown_cards_are_the_only_strangers(lived):
    client, nik_list = lived
    feeds = everything(client)
    bodies: dict[str, dict] = {}
    for platform, events in feeds.items():
        for event in events:
            assert event["event_id"].startswith(platform + "-")
            # A duplicate delivery is the same event, body and all.
            assert bodies.setdefault(event["event_id"], event) == event
    cards = {card_of(n): n for n in nik_list}
    expected = Counter()
    for card in cards:
        life, _ = card_life(SEED, card, 1_000_000, DAY0)
        expected[card] = len(life)
    got = Counter(e["card_number"] for e in bodies.values() if e["card_number"] in cards)
    assert got == +expected
    strangers = [e for e in bodies.values() if e["card_number"] not in cards]
    assert all(e["type"] == "PURCHASED" and len(e["card_number"]) == 16 for e in strangers)
    total = sum(len(f) for f in feeds.values())
    assert total >= len(bodies)  # duplicates only add deliveries, never new ids
    assert sum(expected.values()) > 1.5 * len(cards)


def test_events_carry_the_contract_s_fields(lived):
    client, _ = lived
    for events in everything(client).values():
        for e in events:
            at = datetime.fromisoformat(e["at"])
            assert at.utcoffset() == timedelta(hours=7)
            assert e["type"] in ("PURCHASED", "CANCELLED", "COMPLETED")
            assert e["course_id"].startswith("c-")
            if e["type"] == "COMPLETED":
                assert "price" not in e
            else:
                assert isinstance(e["price"], int) and e["price"] % 1000 == 0
                assert e["price"] >= MIN_PRICE


def test_pages_of_any_size_give_the_same_feed_and_a_cursor_at_the_end(lived):
    client, _ = lived
    for platform in TRAINING_PLATFORMS:
        whole, end, pages = client.read_feed(platform, limit=10_000)
        paged, paged_end, many = client.read_feed(platform, limit=37)
        assert paged == whole and paged_end == end
        assert pages == 1 and many == -(-len(whole) // 37)
        # Reading again from the last cursor: nothing new, the same cursor back.
        again = client.feed(platform, end)
        assert again == {"events": [], "next": end, "more": False}


def test_a_feed_is_out_of_order_by_at(lived):
    client, _ = lived
    events = client.read_feed(TRAINING_PLATFORMS[0], limit=10_000)[0]
    ats = [datetime.fromisoformat(e["at"]) for e in events]
    assert any(b < a for a, b in zip(ats, ats[1:], strict=False))


def test_bad_cursors_limits_and_platforms_are_refused(lived):
    client, _ = lived
    path = f"/training/{TRAINING_PLATFORMS[0]}/v1/events"
    assert client.get(path, params={"after": "not-a-cursor"}).status_code == 400
    assert client.get(path, params={"limit": 0}).status_code == 400
    assert client.get(path, params={"limit": 10_001}).status_code == 400
    assert client.get("/training/nowhere/v1/events").status_code == 404
    assert client.http.get(client.base_url + path).status_code == 401


def test_events_appear_as_the_clock_passes_them():
    with SimulatorThread(SEED) as sim:
        client = Partners(sim)
        client.set_clock(CREDITED_AT)
        credit_all(client, creditable(200))
        assert everything(client) == {p: [] for p in TRAINING_PLATFORMS}
        platform = TRAINING_PLATFORMS[1]
        cursor = client.feed(platform)["next"]
        seen = []
        for day in (1, 3, 10, 40, 200):
            now = client.set_clock(
                (datetime.fromisoformat(CREDITED_AT) + timedelta(days=day)).isoformat()
            )
            new, cursor, _ = client.read_feed(platform, cursor, limit=50)
            assert all(datetime.fromisoformat(e["at"]) <= datetime.fromisoformat(now) for e in new)
            seen.append(len(new))
            if day == 3:
                assert new, "a few days after the credit, purchases have arrived"
        whole = client.read_feed(platform)[0]
        assert sum(seen) == len(whole)  # read as the clock went: nothing lost or repeated


def test_same_seed_same_moment_same_events_and_another_seed_others():
    def run(seed: str) -> dict:
        with SimulatorThread(seed) as sim:
            client = Partners(sim)
            client.set_clock(CREDITED_AT)
            credit_all(client, creditable(100, seed=SEED))
            client.set_clock(LATER)
            return everything(client)

    first, second, other = run(SEED), run(SEED), run("another-seed")
    assert first == second and sum(map(len, first.values())) > 100
    assert first != other


def test_lives_have_the_shares_and_bounds_of_the_spec():
    firsts, deadline_day, never, used, cancelled, completed = 0, 0, 0, 0, 0, 0
    credit_date = datetime.fromtimestamp(DAY0, WIB).date()
    n = 4000
    for i in range(n):
        card = f"5049{i:012d}"
        amount = 1_000_000
        life, at_issuer = card_life(SEED, card, amount, DAY0)
        if not life:
            never += 1
            used += at_issuer
            continue
        assert all(e[0] >= DAY0 for e in life)
        first = life[0]
        day = (datetime.fromtimestamp(first[0], WIB).date() - credit_date).days
        assert 0 <= day <= FIRST_TRAINING_DAYS
        firsts += day < FIRST_TRAINING_DAYS
        deadline_day += day == FIRST_TRAINING_DAYS
        kinds = [e[3] for e in life]
        cancelled += CANCELLED in kinds
        completed += COMPLETED in kinds
        bought = sum(e[5] for e in life if e[3] == PURCHASED)
        refunded = sum(e[5] for e in life if e[3] == CANCELLED)
        assert bought - refunded <= amount
        for e in life:
            if e[3] == COMPLETED:  # completed where it was bought, after the purchase
                bought_at = [p for p in life if p[3] == PURCHASED and p[4] == e[4]]
                assert bought_at and bought_at[0][1] == e[1] and bought_at[0][0] < e[0]
    buyers = n - never
    assert 0.83 < firsts / n < 0.89
    assert 0.025 < deadline_day / n < 0.055
    assert 0.08 < never / n < 0.12 and 0.04 < used / never < 0.17
    assert 0.015 < cancelled / buyers < 0.045
    assert 0.87 < completed / buyers < 0.93
    assert date(2020, 4, 20) == credit_date


@pytest.fixture(scope="module")
def scripted():
    with SimulatorThread(SEED, lives="none") as sim:
        client = Partners(sim)
        client.set_clock(CREDITED_AT)
        yield client
        client.http.close()


def test_with_lives_none_only_scripted_events_are_delivered_verbatim_in_order(scripted):
    client = scripted
    nik = creditable(1, 9000)[0]
    credit_all(client, [nik], "scripted")
    card = card_of(nik)
    client.set_clock("2020-06-30T00:00:00+07:00")
    assert everything(client) == {p: [] for p in TRAINING_PLATFORMS}
    start = client.feed("marketplace-b")["next"]
    events = [
        {"event_id": "x-2", "type": "COMPLETED", "card_number": card, "course_id": "c-9",
         "at": "2020-05-02T10:00:00+07:00"},
        {"event_id": "x-1", "type": "PURCHASED", "card_number": card, "course_id": "c-9",
         "price": 250_000, "at": "2020-04-21T10:00:00+07:00"},
        {"event_id": "x-1", "type": "PURCHASED", "card_number": card, "course_id": "c-9",
         "price": 250_000, "at": "2020-04-21T10:00:00+07:00"},
    ]  # fmt: skip
    answer = client.admin("training/events", {"platform": "marketplace-b", "events": events})
    assert answer["events"] == 3
    got, _, _ = client.read_feed("marketplace-b", start)
    assert got == events
    assert client.read_feed("marketplace-a")[0] == []
    refused = client.http.post(
        client.base_url + "/_admin/training/events",
        json={"platform": "marketplace-b", "events": [{**events[1], "at": "2020-04-21T10:00"}]},
    )
    assert refused.status_code == 400 and "at" in refused.text
