"""The one HTTP client every partner uses: batching, retries, rate and concurrency limits, breaker.

It applies the common rules of partner-api.md; the per-partner modules only say which path
to call and how to read one result. Nothing here logs bodies, keys or personal data.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeGuard, TypeVar

import orjson
import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from partners.config import PartnerSettings
from partners.limits import (
    CircuitBreaker,
    Limiter,
    RateLimiter,
    SharedLimits,
    SharedRateLimiter,
)

T = TypeVar("T")
LOGGER = logging.getLogger("prakerja.partners")

TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
# Seconds an idle HTTP session (its kept-alive connection) may wait and still be reused.
IDLE_REUSE_S = 2.0
# Errors raised before or while reading an answer that a repeat may cure.
_TRANSIENT_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


@dataclass(frozen=True)
class PartnerFailure:
    """Why a partner gave no usable answer for an item; the item stays pending.

    `detail` never holds personal data or a key. `needs_person` marks failures that
    retrying later will not cure (refused credentials, a request the partner calls invalid).
    """

    partner_id: str
    error_class: str
    detail: str
    needs_person: bool = False


class PartnerError(Exception):
    """A non-batch call (a lookup page, a statement) that got no usable answer."""

    def __init__(self, failure: PartnerFailure) -> None:
        super().__init__(f"{failure.partner_id}: {failure.error_class}: {failure.detail}")
        self.failure = failure


class _Transient(Exception):
    def __init__(
        self, error_class: str, detail: str, *, retry_after: float | None = None, request_id: str
    ) -> None:
        super().__init__(error_class)
        self.error_class = error_class
        self.detail = detail
        self.retry_after = retry_after
        self.request_id = request_id


class _Final(Exception):
    def __init__(self, error_class: str, detail: str, *, needs_person: bool) -> None:
        super().__init__(error_class)
        self.error_class = error_class
        self.detail = detail
        self.needs_person = needs_person


class _TooLarge(Exception):
    pass


class _Attempts:
    """What one retried call has learnt so far: answered items, items still open and why."""

    def __init__(self, pending: dict[str, dict]) -> None:
        self.pending = pending
        self.settled: dict[str, Any] = {}
        self.problems: dict[str, tuple[str, str]] = {}
        self.count = 0


class PartnerClient:
    """Calls one partner by the common rules of partner-api.md; safe to share between threads."""

    def __init__(
        self,
        settings: PartnerSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session_factory: Callable[[], requests.Session] = requests.Session,
        logger: logging.Logger = LOGGER,
        limiter: Limiter | None = None,
        shared: SharedLimits | None = None,
        on_call: Callable[[float, float], None] | None = None,
    ) -> None:
        self.settings = settings
        # Told each request's (seconds on the wire, seconds it waited for its turn):
        # runtime/timing.py, wired by build_app.
        self._on_call = on_call
        # Called with the partner id before every request: a limit shared by all the
        # processes of the program (partners/limits.py's Limiter, chosen by build_app).
        self._shared_pacer = limiter
        self._sleep = sleep
        self._clock = clock
        self._session_factory = session_factory
        self._log = logger
        # HTTP sessions (each with its kept-alive connection) lent to one request at a
        # time and returned: as many as requests were ever in flight at once (at most
        # max_concurrency, the slots below), whichever threads send them. One per calling
        # thread leaked a session and a connection for every short-lived thread
        # (screening's chains start new threads each batch: thousands per worker).
        # An idle session is closed rather than reused after IDLE_REUSE_S: a server closes
        # an idle kept-alive connection after a few seconds (uvicorn: 5), and a request
        # sent on one it is closing just then fails (a retry, a warning, for nothing).
        self._idle: list[tuple[requests.Session, float]] = []
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        # Whether the partner answered its last batch cleanly. Until it has (and after any
        # failure), this process's batches to it go one at a time, whichever thread or
        # call sends them (screening's chunks ask an agency side by side): a partner that
        # is down sees the calls its circuit breaker allows, and no more.
        self._healthy = False
        self._probing = threading.Lock()
        # threading's, or multiprocessing's when shared (no common type).
        self._slots: Any = threading.BoundedSemaphore(settings.max_concurrency)
        # A burst as wide as the concurrency lets parallel callers start together; after
        # that the bucket paces calls at max_rps.
        self._limiter: RateLimiter | SharedRateLimiter = RateLimiter(
            settings.max_rps,
            clock,
            sleep,
            burst=max(1.0, min(float(settings.max_concurrency), settings.max_rps)),
        )
        self.breaker = CircuitBreaker(
            settings.breaker_threshold, settings.breaker_cooldown_s, clock
        )
        # In a worker process, the limits and breaker shared by all workers replace these.
        if shared is not None:
            self._limiter, self._slots, self.breaker = shared
        # Lowered when the partner answers 413: its real limit is below the configured one.
        self._batch_limit = settings.batch_size

    def close(self) -> None:
        """Closes the HTTP sessions this client opened (one per request in flight at once)."""
        with self._lock:
            sessions, self._sessions, self._idle = self._sessions, [], []
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for session in sessions:
            session.close()

    def post_items(
        self,
        path: str,
        list_key: str,
        items: Sequence[dict],
        *,
        key_field: str,
        parse: Callable[[dict], T | None],
    ) -> dict[str, T | PartnerFailure]:
        """Sends `items` under `list_key`; returns one answer or failure per item key.

        Items are sent in batches of at most `batch_size`; only items without a usable
        result are sent again. `parse` returns None for a result it cannot read.
        """
        keys = [item.get(key_field) for item in items]
        for number, key in enumerate(keys, 1):
            if not isinstance(key, str) or not key:
                raise ValueError(f"item #{number} has no {key_field}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"{key_field} values must be unique within one call")
        results: dict[str, T | PartnerFailure] = {}

        def call(chunk: list[dict]) -> tuple[dict[str, T | PartnerFailure], list[dict]]:
            if not self.breaker.allow():
                failure = PartnerFailure(self.settings.id, "CircuitOpen", "circuit open")
                return {item[key_field]: failure for item in chunk}, []
            answered, too_large = self._post_chunk(path, list_key, chunk, key_field, parse)
            self._healthy = not too_large and not any(
                isinstance(value, PartnerFailure) for value in answered.values()
            )
            return answered, too_large

        def one(chunk: list[dict]) -> tuple[dict[str, T | PartnerFailure], list[dict]]:
            if not self._healthy:
                with self._probing:
                    if not self._healthy:
                        return call(chunk)
            return call(chunk)

        # The first batch goes alone. While the partner answers every batch cleanly, the
        # next ones go side by side, as many at a time as its max_concurrency admits (and
        # still within max_rps); after any failure or 413 they go one at a time again, so
        # a partner that is down or refusing sees the calls the breaker allows and no
        # more, and a lowered batch limit applies to every batch not sent yet.
        unsent: deque[dict] = deque(items)
        in_flight: set[Future] = set()
        healthy = False
        while unsent or in_flight:
            width = self.settings.max_concurrency if healthy else 1
            done: list[tuple[dict[str, T | PartnerFailure], list[dict]]] = []
            if not in_flight and width == 1:
                done.append(one(self._cut(unsent)))
            else:
                pool = self._executor()
                while unsent and len(in_flight) < width:
                    in_flight.add(pool.submit(one, self._cut(unsent)))
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                done.extend(future.result() for future in finished)
            healthy = True
            for answered, too_large in done:
                results.update(answered)
                healthy = (
                    healthy
                    and not too_large
                    and not any(isinstance(value, PartnerFailure) for value in answered.values())
                )
                if not too_large:
                    continue
                if len(too_large) == 1:
                    results[too_large[0][key_field]] = PartnerFailure(
                        self.settings.id, "HTTPStatus413", "HTTP 413 for a single item", True
                    )
                else:
                    self._lower_batch_limit((len(too_large) + 1) // 2)
                    unsent.extendleft(reversed(too_large))
        return results

    def _cut(self, unsent: deque[dict]) -> list[dict]:
        """The next batch off `unsent`, at the batch limit known now."""
        size = min(self._batch_limit, len(unsent))
        return [unsent.popleft() for _ in range(size)]

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.max_concurrency,
                    thread_name_prefix=f"partner-{self.settings.id}",
                )
            return self._pool

    def get_json(self, path: str, params: dict | None = None) -> tuple[int, dict | None]:
        """GETs `path`; returns (200, body) or (404, None). Raises PartnerError otherwise."""
        return self._get(path, params, label=path, parse=lambda body: body)

    def _get(
        self,
        path: str,
        params: dict | None,
        *,
        label: str,
        parse: Callable[[dict], T | None],
    ) -> tuple[int, T | None]:
        """GET with the retry rules; `label` is what logs show instead of a path with keys."""
        if not self.breaker.allow():
            raise PartnerError(PartnerFailure(self.settings.id, "CircuitOpen", "circuit open"))
        state = _Attempts({})

        def attempt() -> tuple[int, T | None]:
            state.count += 1
            response, request_id = self._send("GET", path, label, params=params)
            if response.status_code == 404:
                return 404, None
            self._raise_for_status(response, request_id)
            body = self._json_object(response, request_id)
            value = parse(body)
            if value is None:
                raise _Transient("InvalidJSON", "unreadable body", request_id=request_id)
            return response.status_code, value

        try:
            answer = self._retrying(label)(attempt)
        except _Transient as exc:
            self.breaker.record_failure()
            raise PartnerError(self._exhausted(exc.error_class, exc.detail, state.count)) from None
        except _TooLarge:
            self.breaker.record_success()
            raise PartnerError(
                PartnerFailure(self.settings.id, "HTTPStatus413", "HTTP 413 on a GET", True)
            ) from None
        except _Final as exc:
            self._record_final(exc)
            raise PartnerError(
                PartnerFailure(self.settings.id, exc.error_class, exc.detail, exc.needs_person)
            ) from None
        except BaseException:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return answer

    def _post_chunk(
        self,
        path: str,
        list_key: str,
        chunk: list[dict],
        key_field: str,
        parse: Callable[[dict], T | None],
    ) -> tuple[dict[str, T | PartnerFailure], list[dict]]:
        """One batch with its retries; returns its answers and, after a 413, the items left."""
        state = _Attempts({item[key_field]: item for item in chunk})

        def attempt() -> None:
            state.count += 1
            items = list(state.pending.values())
            try:
                response, request_id = self._send("POST", path, path, body={list_key: items})
                self._raise_for_status(response, request_id)
                body = self._json_object(response, request_id)
            except _Transient as exc:
                for key in state.pending:
                    state.problems[key] = (exc.error_class, exc.detail)
                raise
            self._apply_results(body, state, key_field, parse, request_id)

        answers: dict[str, T | PartnerFailure] = {}
        try:
            self._retrying(path)(attempt)
        except _Transient:
            self.breaker.record_failure()
            for key in state.pending:
                error_class, detail = state.problems[key]
                answers[key] = self._exhausted(error_class, detail, state.count)
        except _TooLarge:
            self.breaker.record_success()
            answers.update(state.settled)
            return answers, list(state.pending.values())
        except _Final as exc:
            self._record_final(exc)
            failure = PartnerFailure(
                self.settings.id, exc.error_class, exc.detail, exc.needs_person
            )
            answers.update({key: failure for key in state.pending})
        except BaseException:
            self.breaker.record_failure()
            raise
        else:
            self.breaker.record_success()
        answers.update(state.settled)
        return answers, []

    def _apply_results(
        self,
        body: dict,
        state: _Attempts,
        key_field: str,
        parse: Callable[[dict], T | None],
        request_id: str,
    ) -> None:
        results = body.get("results")
        if not isinstance(results, list):
            for pending_key in state.pending:
                state.problems[pending_key] = ("InvalidJSON", "unreadable body")
            raise _Transient("InvalidJSON", "unreadable body", request_id=request_id)
        parsed: dict[str, list[Any]] = {}
        unknown = 0
        for result in results:
            key: Any = result.get(key_field) if isinstance(result, dict) else None
            if not isinstance(key, str) or key not in state.pending:
                unknown += 1
                continue
            parsed.setdefault(key, []).append(_safe_parse(parse, result))
        if unknown:
            self._log.info(
                "%s: ignored %d results for keys not in request %s",
                self.settings.id,
                unknown,
                request_id,
            )
        for key in list(state.pending):
            values = parsed.get(key)
            if not values:
                state.problems[key] = ("MissingResult", "no result for item")
            elif len(values) == 1 and values[0] is not None:  # the usual case, kept cheap
                state.settled[key] = values[0]
                del state.pending[key]
                state.problems.pop(key, None)
            elif any(value is None for value in values):
                state.problems[key] = ("UnreadableResult", "unreadable result for item")
            elif any(value != values[0] for value in values[1:]):
                state.problems[key] = ("ConflictingResults", "conflicting results for item")
            else:
                state.settled[key] = values[0]
                del state.pending[key]
                state.problems.pop(key, None)
        if state.pending:
            counts = Counter(state.problems[key][0] for key in state.pending)
            error_class = counts.most_common(1)[0][0]
            summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
            raise _Transient(error_class, summary, request_id=request_id)

    def _send(
        self, method: str, path: str, label: str, *, body: Any = None, params: dict | None = None
    ) -> tuple[requests.Response, str]:
        request_id = str(uuid.uuid4())
        headers = {
            "Authorization": f"Bearer {self.settings.api_key}",
            "Content-Type": "application/json",
            "X-Request-Id": request_id,
        }
        # orjson: JSON work is most of a batch call's CPU at millions of items.
        data = None if body is None else orjson.dumps(body)
        queued = time.perf_counter()
        with self._slots:
            self._limiter.acquire()
            if self._shared_pacer is not None:
                self._shared_pacer(self.settings.id)
            sent = time.perf_counter()
            try:
                with self._lent_session() as session:
                    response = session.request(
                        method,
                        self.settings.base_url + path,
                        data=data,
                        params=params,
                        headers=headers,
                        timeout=(self.settings.connect_timeout_s, self.settings.timeout_s),
                    )
            except _TRANSIENT_EXCEPTIONS as exc:
                # The class name only: requests' messages carry the URL, which may hold a key.
                name = type(exc).__name__
                raise _Transient(name, name, request_id=request_id) from None
            except requests.RequestException as exc:
                name = type(exc).__name__
                raise _Final(name, f"{name} before any answer", needs_person=True) from None
            finally:
                if self._on_call is not None:
                    self._on_call(time.perf_counter() - sent, sent - queued)
        self._log.debug(
            "%s %s %s -> %d (%s)", self.settings.id, method, label, response.status_code, request_id
        )
        return response, request_id

    def _raise_for_status(self, response: requests.Response, request_id: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 429:
            raise _Transient(
                "RateLimited",
                "HTTP 429",
                retry_after=_retry_after(response.headers.get("Retry-After")),
                request_id=request_id,
            )
        if status in TRANSIENT_STATUSES:
            raise _Transient(f"HTTPStatus{status}", f"HTTP {status}", request_id=request_id)
        if status == 413:
            raise _TooLarge()
        if status in (401, 403):
            detail = f"HTTP {status} credentials refused"
        elif status == 400:
            detail = "HTTP 400 request refused as invalid"
        else:
            detail = f"HTTP {status} not in the partner contract"
        raise _Final(f"HTTPStatus{status}", detail, needs_person=True)

    def _json_object(self, response: requests.Response, request_id: str) -> dict:
        try:
            body = orjson.loads(response.content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Transient("InvalidJSON", "unreadable body", request_id=request_id)
        return body

    def _retrying(self, label: str) -> Retrying:
        retry = self.settings.retry
        started = self._clock()

        def stop(state: RetryCallState) -> bool:
            # The coming wait counts against the budget: never sleep past total_s.
            spent = self._clock() - started + state.upcoming_sleep
            return state.attempt_number >= retry.attempts or spent > retry.total_s

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return exc.retry_after
            # Full jitter: spreads the retries of many callers hit by the same outage.
            cap = min(retry.backoff_max_s, retry.backoff_s * 2 ** (state.attempt_number - 1))
            return random.uniform(0.0, cap)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            assert isinstance(exc, _Transient)
            self._log.warning(
                "%s %s: %s on attempt %d of %d (%s), retrying in %.2f s",
                self.settings.id,
                label,
                exc.detail,
                state.attempt_number,
                retry.attempts,
                exc.request_id,
                state.upcoming_sleep,
            )

        return Retrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _exhausted(self, error_class: str, detail: str, attempts: int) -> PartnerFailure:
        plural = "s" if attempts != 1 else ""
        return PartnerFailure(
            self.settings.id, error_class, f"{detail} after {attempts} attempt{plural}"
        )

    def _record_final(self, exc: _Final) -> None:
        # Refused credentials are the partner saying no to every call: count them so the
        # breaker stops the stage; an invalid request is about that request only.
        if exc.error_class in ("HTTPStatus401", "HTTPStatus403"):
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        self._log.error("%s: %s", self.settings.id, exc.detail)

    def _lower_batch_limit(self, limit: int) -> None:
        with self._lock:
            if limit < self._batch_limit:
                self._batch_limit = limit
                self._log.warning(
                    "%s: answered 413, sending at most %d items per call", self.settings.id, limit
                )

    @contextmanager
    def _lent_session(self) -> Iterator[requests.Session]:
        """An idle session for one request (a new one when all are in use), returned after."""
        session = None
        stale: list[requests.Session] = []
        now = time.monotonic()
        with self._lock:
            while self._idle and session is None:
                candidate, since = self._idle.pop()
                if now - since < IDLE_REUSE_S:
                    session = candidate
                else:
                    stale.append(candidate)
                    self._sessions.remove(candidate)
            if session is None:
                session = self._session_factory()
                self._sessions.append(session)
        for old in stale:
            old.close()
        try:
            yield session
        finally:
            with self._lock:
                if session in self._sessions:  # not closed meanwhile by close()
                    self._idle.append((session, time.monotonic()))


def _safe_parse(parse: Callable[[dict], T | None], result: dict) -> T | None:
    try:
        return parse(result)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), None if unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_int(value: object) -> TypeGuard[int]:
    """An integer that is not a bool (JSON true must not pass for 1)."""
    return isinstance(value, int) and not isinstance(value, bool)
