"""A simulator on a thread for the module, and an HTTP session that speaks to it."""

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from partners.simulator.server import SimulatorThread

SEED = "sim-test-seed"
AUTH = {"Authorization": "Bearer test-key"}


class Partners:
    """Thin helper: posts to the simulator with auth, and sets its faults."""

    def __init__(self, sim: SimulatorThread) -> None:
        self.sim = sim
        self.base_url = sim.base_url
        self.http = requests.Session()

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return self.http.post(self.base_url + path, json=body, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        return self.http.get(self.base_url + path, headers=headers, **kwargs)

    def set_faults(self, faults: dict[str, Any]) -> None:
        response = self.http.post(self.base_url + "/_admin/faults", json=faults)
        assert response.status_code == 200, response.text

    def stats(self) -> dict[str, Any]:
        return self.http.get(self.base_url + "/_admin/stats").json()

    def admin(self, path: str, body: Any = None) -> Any:
        """GET (no body) or POST an /_admin route; its JSON answer (asserting a 200)."""
        url = f"{self.base_url}/_admin/{path}"
        response = self.http.get(url) if body is None else self.http.post(url, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def set_clock(self, now: str) -> str:
        return self.admin("clock", {"now": now})["now"]

    def feed(self, platform: str, after: str | None = None, limit: int = 1000) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = self.get(f"/training/{platform}/v1/events", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def read_feed(self, platform: str, after: str | None = None, limit: int = 1000) -> tuple:
        """Every event now waiting after `after`, page by page: (events, last cursor, pages)."""
        events: list[dict[str, Any]] = []
        pages = 0
        while True:
            page = self.feed(platform, after, limit)
            pages += 1
            events += page["events"]
            assert isinstance(page["next"], str)
            after = page["next"]
            if not page["more"]:
                return events, after, pages


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorThread]:
    with SimulatorThread(SEED) as sim:
        yield sim


@pytest.fixture
def partners(simulator: SimulatorThread) -> Iterator[Partners]:
    client = Partners(simulator)
    client.set_faults({})
    yield client
    client.set_faults({})
    client.http.close()


def niks(count: int, start: int = 0) -> list[str]:
    """Valid-looking NIKs (Jakarta, born 1 Jan 1990) with distinct serials."""
    return [f"31710101019{n:05d}" for n in range(start + 1, start + count + 1)]


def card_of(nik: str) -> str:
    return "5049" + nik[-12:]


def credit(key: str, nik: str, amount: int = 1_000_000, reference: str = "wave-1/training") -> dict:
    return {
        "idempotency_key": key,
        "card_number": card_of(nik),
        "nik": nik,
        "amount": amount,
        "currency": "IDR",
        "reference": reference,
    }


def creditable(count: int, start: int = 0, seed: str = SEED) -> list[str]:
    """`count` NIKs whose credits the issuer applies (not credit_rejected)."""
    from partners.simulator.truth import person_truth

    out = []
    n = start
    while len(out) < count:
        batch = [x for x in niks(500, n) if not person_truth(seed, x).credit_rejected]
        out += batch[: count - len(out)]
        n += 500
    return out
