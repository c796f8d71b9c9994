"""The rate limiter paces calls and the circuit breaker stops and resumes them."""

from __future__ import annotations

import pytest

from partners.limits import CircuitBreaker, RateLimiter
from tests.partners import FakeClock


def test_ten_per_second_spaces_calls_a_tenth_of_a_second_apart():
    clock = FakeClock()
    limiter = RateLimiter(10, clock, clock.sleep)

    for _ in range(4):
        limiter.acquire()

    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1])


def test_a_burst_goes_out_at_once_and_the_rest_is_paced():
    clock = FakeClock()
    limiter = RateLimiter(10, clock, clock.sleep, burst=3)

    for _ in range(5):
        limiter.acquire()

    assert clock.sleeps == pytest.approx([0.1, 0.1])


def test_an_idle_limiter_lets_the_next_call_through_at_once():
    clock = FakeClock()
    limiter = RateLimiter(10, clock, clock.sleep)
    limiter.acquire()
    clock.now += 5

    assert limiter.acquire() == 0.0
    assert clock.sleeps == []


def test_breaker_opens_only_after_threshold_consecutive_failures():
    clock = FakeClock()
    breaker = CircuitBreaker(3, 30.0, clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow()

    breaker.record_failure()

    assert not breaker.allow()
    assert breaker.state == CircuitBreaker.OPEN


def test_half_open_breaker_lets_one_trial_through_and_a_failed_trial_reopens_it():
    clock = FakeClock()
    breaker = CircuitBreaker(1, 30.0, clock)
    breaker.record_failure()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1

    assert breaker.allow()
    assert not breaker.allow()  # only one trial at a time
    breaker.record_failure()

    assert not breaker.allow()
    clock.now += 30.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.allow() and breaker.allow()
