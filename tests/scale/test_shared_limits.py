"""Partner rate limits shared by all workers: Prefect global rate limits, strict."""

from __future__ import annotations

import time

import pytest


def test_partner_limits_are_created_at_max_rps_and_pace_requests(prefect_server):
    from prefect import get_client

    from partners.config import simulator_config
    from tasks.shared_limits import ensure_partner_limits, limit_name, take_partner_slot

    config = simulator_config("http://127.0.0.1:9")
    names = ensure_partner_limits(config)
    assert limit_name("registry") in names and len(names) == 1 + 8 + 4 + 2
    assert ensure_partner_limits(config) == names  # idempotent
    with get_client(sync_client=True) as client:
        registry = client.read_global_concurrency_limit_by_name(limit_name("registry"))
    assert registry.slot_decay_per_second == config.registry.max_rps

    started = time.monotonic()
    for _ in range(3):
        take_partner_slot("registry")
    assert time.monotonic() - started < 10


def test_a_partner_without_its_limit_is_an_error_not_a_silent_free_pass(prefect_server):
    from tasks.shared_limits import take_partner_slot

    with pytest.raises(Exception, match="prakerja-partner-nobody"):
        take_partner_slot("nobody")
