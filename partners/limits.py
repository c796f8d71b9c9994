"""Politeness towards a partner: how fast and how many at once it is called, and when not.

One interface, `Limiter`: what every partner request takes first, a token of the
partner's budget shared beyond the client (partner_id -> waits until its token is due).
Its implementations, chosen by the run's `Execution.partner_limits` through
`limiter_for` (called by runtime/app.py's build_app, nowhere else):

- `database` (default): partners/shared_limits.py's DatabaseRateLimits, one bucket per
  partner beside the program's data, shared by every process of the program;
- `prefect`: Prefect global rate limits (partners/shared_limits.py's take_partner_slot);
- `process`: None, nothing beyond the process.

Beneath it, each client keeps its own `RateLimiter`, concurrency semaphore and
`CircuitBreaker`; a worker pool's processes get one shared-memory set per partner
(`SharedLimits`, made by the pool and handed to each worker's clients explicitly through
build_app, never through a global), so that together they keep within the partner's
limits as one process would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from partners.config import PartnersConfig


class Limiter(Protocol):
    """Takes one token of the partner's shared budget, waiting until it is due."""

    def __call__(self, partner_id: str, /) -> None: ...


def limiter_for(mode: str, *, engine: Engine, config: PartnersConfig) -> Limiter | None:
    """The Limiter of partner limits `mode` (database, prefect, process): None for
    `process` (or a database no other process can open)."""
    from partners.shared_limits import partner_pacer

    return partner_pacer(engine, config, mode)


Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimiter:
    """A token bucket: on average at most `max_rps` calls a second, bursts of up to `burst`."""

    def __init__(
        self,
        max_rps: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        *,
        burst: float = 1.0,
    ) -> None:
        if max_rps <= 0 or burst < 1:
            raise ValueError("max_rps must be positive and burst at least 1")
        self._rate = float(max_rps)
        self._capacity = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self._capacity
        self._updated = clock()

    def acquire(self) -> float:
        """Takes one token, sleeping until it is there; returns the time waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            # The token is taken now even if it is not there yet (the balance goes negative):
            # each caller reserves its own slot, so waiting threads never race for a refill.
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class SharedRateLimiter:
    """RateLimiter's token bucket in shared memory: one budget for several processes.

    Made before the processes start (runtime.workers) and handed to them when they are
    spawned; time.monotonic is the same clock in every process of the machine.
    """

    def __init__(self, max_rps: float, *, burst: float = 1.0, context) -> None:
        if max_rps <= 0 or burst < 1:
            raise ValueError("max_rps must be positive and burst at least 1")
        self._rate = float(max_rps)
        self._capacity = float(burst)
        self._state = context.RawArray("d", [self._capacity, time.monotonic()])  # tokens, at
        self._lock = context.Lock()

    def acquire(self) -> float:
        """Takes one token, sleeping until it is there; returns the time waited."""
        with self._lock:
            now = time.monotonic()
            tokens = min(self._capacity, self._state[0] + (now - self._state[1]) * self._rate)
            tokens -= 1.0  # reserved now, as in RateLimiter
            self._state[0], self._state[1] = tokens, now
            wait = -tokens / self._rate if tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


# A worker pool's limits of one partner: (rate limiter, concurrency semaphore, circuit
# breaker) in shared memory, made before the workers start (runtime/workers.py) and given
# to each worker's clients through build_app, where they replace the client's own. The
# semaphore is a multiprocessing one (no common type with threading's).
SharedLimits = tuple["SharedRateLimiter", Any, "SharedCircuitBreaker"]


class CircuitBreaker:
    """Stops calls to a partner after `threshold` failed calls in a row, for `cooldown_s`.

    After the cool-down one trial call goes through (half-open): its success closes the
    breaker, its failure opens it for another cool-down.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __init__(self, threshold: int, cooldown_s: float, clock: Clock = time.monotonic) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self._cooled_down():
                return self.HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open, only one caller gets True."""
        with self._lock:
            if self._state == self.CLOSED:
                return True
            if self._state == self.OPEN:
                if not self._cooled_down():
                    return False
                self._state = self.HALF_OPEN
                self._trial_running = False
            if self._trial_running:
                return False
            self._trial_running = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._state = self.CLOSED
            self._failures = 0
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            # A late failure of a call begun before the breaker opened does not extend the wait.
            if self._state == self.OPEN:
                return
            if self._state == self.HALF_OPEN or self._failures >= self._threshold:
                self._state = self.OPEN
                self._opened_at = self._clock()
                self._trial_running = False

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._cooldown_s


class SharedCircuitBreaker(CircuitBreaker):
    """A CircuitBreaker whose state lives in shared memory: when one worker process's
    calls open it, every worker stops calling the partner."""

    _STATES = (CircuitBreaker.CLOSED, CircuitBreaker.OPEN, CircuitBreaker.HALF_OPEN)

    def __init__(self, threshold: int, cooldown_s: float, *, context) -> None:
        self._cells = context.RawArray("d", 4)  # state, failures, opened at, trial running
        super().__init__(threshold, cooldown_s)  # time.monotonic: one clock for all
        self._lock = context.Lock()

    @property
    def _state(self) -> str:
        return self._STATES[int(self._cells[0])]

    @_state.setter
    def _state(self, value: str) -> None:
        self._cells[0] = self._STATES.index(value)

    @property
    def _failures(self) -> int:
        return int(self._cells[1])

    @_failures.setter
    def _failures(self, value: int) -> None:
        self._cells[1] = value

    @property
    def _opened_at(self) -> float:
        return self._cells[2]

    @_opened_at.setter
    def _opened_at(self, value: float) -> None:
        self._cells[2] = value

    @property
    def _trial_running(self) -> bool:
        return bool(self._cells[3])

    @_trial_running.setter
    def _trial_running(self, value: bool) -> None:
        self._cells[3] = 1.0 if value else 0.0
