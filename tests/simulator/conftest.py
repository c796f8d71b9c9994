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
