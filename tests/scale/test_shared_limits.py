"""Partner rate limits shared by all workers: Prefect global rate limits, strict."""

from __future__ import annotations

import time

import pytest


def test_partner_limits_are_created_at_max_rps_and_pace_requests(prefect_server):
    from prefect import get_client

    from partners.config import simulator_config
    from partners.shared_limits import ensure_partner_limits, limit_name, take_partner_slot

    config = simulator_config("http://127.0.0.1:9")
    names = ensure_partner_limits(config)
    # registry, 8 agencies, 4 payment partners, issuer and gateway, 2 training platforms
    assert limit_name("registry") in names and len(names) == 1 + 8 + 4 + 2 + 2
    assert limit_name("marketplace-a") in names
    assert ensure_partner_limits(config) == names  # idempotent
    with get_client(sync_client=True) as client:
        registry = client.read_global_concurrency_limit_by_name(limit_name("registry"))
    assert registry.slot_decay_per_second == config.registry.max_rps

    started = time.monotonic()
    for _ in range(3):
        take_partner_slot("registry")
    assert time.monotonic() - started < 10


def test_a_partner_without_its_limit_is_an_error_not_a_silent_free_pass(prefect_server):
    from partners.shared_limits import take_partner_slot

    with pytest.raises(Exception, match="prakerja-partner-nobody"):
        take_partner_slot("nobody")


# ---------------------------------------------------------------- by default, in the database
RPS = 4.0
CALLS_EACH = 10
_CLIENT = """
import os, sys, time
from dataclasses import replace
from partners.client import PartnerFailure
from partners.config import simulator_config
from runtime import app as runtime

base, database, go, calls, rps = sys.argv[1:4] + [int(sys.argv[4]), float(sys.argv[5])]
config = simulator_config(base)
config = replace(
    config,
    registry=replace(config.registry, max_rps=rps, max_concurrency=2, batch_size=1),
)
registry = runtime.configure(database=database, partners_config=config).partners.registry
open(f"{go}.ready-{os.getpid()}", "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
records = [
    {"ref": f"{os.getpid()}-{i}", "nik": "3171014101900001", "full_name": "Siti Aminah",
     "birth_date": "1990-01-01", "kk_number": "3171010101100001"}
    for i in range(calls)
]
answers = registry.verify(records)
print(sum(isinstance(a, PartnerFailure) for a in answers.values()))
"""


class _CallTimes:
    """ASGI middleware: when each partner request reached the simulator (one clock)."""

    def __init__(self, app, times: list[float]) -> None:
        self.app, self.times = app, times

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not scope["path"].startswith("/_admin"):
            self.times.append(time.monotonic())
        await self.app(scope, receive, send)


def test_two_processes_share_a_partners_max_rps_by_default(database_url, tmp_path, monkeypatch):
    """Two processes of the program (two waves at once) call one partner whose max_rps is
    4: together they keep to 4 a second (plus the burst), not 4 each."""
    import subprocess
    import sys
    from pathlib import Path

    from partners.simulator.server import SimulatorThread

    monkeypatch.delenv("PRAKERJA_SHARED_RATE_LIMITS", raising=False)
    monkeypatch.delenv("PRAKERJA_PARTNER_LIMITS", raising=False)
    times: list[float] = []
    sim = SimulatorThread("limits")
    sim.app.add_middleware(_CallTimes, times=times)
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    with sim:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _CLIENT,
                    sim.base_url,
                    database_url,
                    str(go),
                    str(CALLS_EACH),
                    str(RPS),
                ],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 60
            while len(list(tmp_path.glob("go.ready-*"))) < 2:
                assert time.monotonic() < deadline, "the clients did not start"
                assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-2000:]
                time.sleep(0.05)
            go.touch()
            outs = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _o, err in outs]
    assert [out.strip() for out, _e in outs] == ["0", "0"]  # every item answered
    assert len(times) == 2 * CALLS_EACH
    times.sort()
    span = times[-1] - times[0]
    burst = 2  # the shared bucket's: min(max_concurrency, max_rps)
    rate = (len(times) - burst) / span
    print(f"\ntwo processes at max_rps {RPS}: {len(times)} calls in {span:.2f} s, {rate:.2f}/s")
    # Each alone would take ~2 s at 4/s; sharing one bucket, both need ~4.5 s.
    assert rate <= RPS * 1.15, f"{rate:.2f} calls/s against a max_rps of {RPS}"


def test_the_database_bucket_costs_little_and_paces_alone(database_url, monkeypatch):
    """One process: a token costs one small statement (about 0.1 ms on SQLite, a round trip
    on PostgreSQL; a request carries up to 1,000 items), and the bucket alone keeps a
    caller to max_rps."""
    from dataclasses import replace

    from models.db import make_engine
    from partners.config import simulator_config
    from partners.shared_limits import DatabaseRateLimits, partner_pacer

    monkeypatch.delenv("PRAKERJA_SHARED_RATE_LIMITS", raising=False)
    monkeypatch.delenv("PRAKERJA_PARTNER_LIMITS", raising=False)
    config = simulator_config(f"http://127.0.0.1:9/{time.monotonic_ns()}")
    engine = make_engine(database_url)
    try:
        fast = replace(config, registry=replace(config.registry, max_rps=1e6))
        pacer = partner_pacer(engine, fast)
        assert isinstance(pacer, DatabaseRateLimits)
        started = time.perf_counter()
        for _ in range(200):
            pacer("registry")
        cost_ms = (time.perf_counter() - started) / 200 * 1000
        print(f"\n{engine.dialect.name}: {cost_ms:.3f} ms a token")
        assert cost_ms < 25  # a bound for a loaded test machine, not the figure

        slow = replace(config, registry=replace(config.registry, max_rps=20.0, max_concurrency=1))
        pacer = DatabaseRateLimits.for_engine(engine, slow)
        pacer("registry")  # the burst (1)
        started = time.monotonic()
        waited = [pacer.acquire("registry") for _ in range(10)]
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 1.5 and sum(waited) > 0

        assert partner_pacer(engine, config, "process") is None
        with pytest.raises(ValueError, match="partner limits"):
            partner_pacer(engine, config, "everywhere")
    finally:
        engine.dispose()
