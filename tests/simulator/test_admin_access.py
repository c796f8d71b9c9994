"""The simulator's /_admin routes (faults, stats, the messages sent, which hold sign-in
codes) answer loopback clients, and others only with the admin token (issue 11)."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import httpx
import pytest
import requests

from partners.simulator.server import SimulatorThread, admin_token_from_env, create_app

SEED = "admin-seed"
TOKEN = "t" * 12 + "-admin-token"
REMOTE = ("203.0.113.7", 40000)
ADMIN = [
    ("GET", "/_admin/stats", None),
    ("GET", "/_admin/messages?last=1", None),
    ("POST", "/_admin/faults", {"partners": {"registry": {"down": True}}}),
    ("POST", "/_admin/reset-stats", None),
]
VERIFY = ("POST", "/registry/v1/identity/verify", {"records": [{"ref": "1", "nik": "1" * 16}]})


def call(app, client, requests_, headers=None) -> list[int]:
    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            codes = []
            for method, path, body in requests_:
                answer = await http.request(method, path, json=body, headers=headers)
                codes.append(answer.status_code)
            return codes

    return asyncio.run(go())


@pytest.mark.parametrize("token", [None, TOKEN])
def test_a_client_off_loopback_without_the_token_gets_403_from_every_admin_route(token):
    app = create_app(SEED, admin_token=token)
    partner = {"Authorization": "Bearer partner-key"}

    assert call(app, REMOTE, ADMIN) == [403] * 4
    assert call(app, REMOTE, ADMIN, {"Authorization": "Bearer not-the-admin-token"}) == [403] * 4
    assert call(app, REMOTE, ADMIN, partner) == [403] * 4
    assert call(app, ("testclient", 1), [ADMIN[0]]) == [403]  # not an address: not trusted
    assert call(app, None, [ADMIN[0]]) == [403]
    # A refused POST /_admin/faults changed nothing: the registry still answers.
    assert call(app, REMOTE, [VERIFY], partner) == [200]
    assert app.state.simulator.faults.for_partner("registry").down is False


@pytest.mark.parametrize(
    "client", [("127.0.0.1", 5), ("127.8.9.1", 5), ("::1", 5), ("::ffff:127.0.0.1", 5)]
)
def test_a_loopback_client_needs_no_token(client):
    assert call(create_app(SEED, admin_token=TOKEN), client, ADMIN) == [200] * 4


def test_off_loopback_the_admin_token_opens_the_admin_routes():
    app = create_app(SEED, admin_token=TOKEN)

    assert call(app, REMOTE, ADMIN, {"Authorization": f"Bearer {TOKEN}"}) == [200] * 4
    assert call(app, REMOTE, ADMIN, {"Authorization": f"bearer {TOKEN}"}) == [200] * 4
    assert call(app, REMOTE, [ADMIN[0]], {"Authorization": f"Bearer {TOKEN}x"}) == [403]
    assert app.state.simulator.faults.for_partner("registry").down is True


def test_a_short_admin_token_is_refused_at_start():
    assert admin_token_from_env({}) is None
    assert admin_token_from_env({"PRAKERJA_SIMULATOR_ADMIN_TOKEN": TOKEN}) == TOKEN
    with pytest.raises(ValueError, match="PRAKERJA_SIMULATOR_ADMIN_TOKEN"):
        admin_token_from_env({"PRAKERJA_SIMULATOR_ADMIN_TOKEN": "short"})


def _non_loopback_address() -> str | None:
    try:
        found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    for address in found.stdout.split():
        if ":" not in address and not address.startswith("127."):
            try:
                with socket.socket() as sock:
                    sock.bind((address, 0))
            except OSError:
                continue
            return address
    return None


def test_over_real_http_from_a_non_loopback_address():
    """Bound on this machine's own non-loopback address, a client's peer address is that
    address (not loopback): refused without the token, served with it."""
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    with SimulatorThread(SEED, host=address) as sim:
        sim.app.admin_token = TOKEN.encode()
        assert requests.get(f"{sim.base_url}/_admin/stats", timeout=5).status_code == 403
        opened = requests.get(
            f"{sim.base_url}/_admin/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert opened.status_code == 200, opened.text
