"""Shared fakes for the partner client tests: a clock that moves only when slept on."""

from __future__ import annotations

from dataclasses import replace

from partners.config import PartnerSettings, RetrySettings

API_KEY = "sk-live-very-secret-4242"
BASE = "http://partner.test/registry"


class FakeClock:
    """Time stands still until someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def settings(**changes: object) -> PartnerSettings:
    base = PartnerSettings(
        id="registry",
        base_url=BASE,
        api_key=API_KEY,
        batch_size=1000,
        max_rps=1000.0,
        retry=RetrySettings(attempts=6, total_s=60.0, backoff_s=0.5, backoff_max_s=8.0),
        breaker_threshold=3,
        breaker_cooldown_s=30.0,
    )
    return replace(base, **changes)
