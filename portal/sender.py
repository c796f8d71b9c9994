"""Sign-in codes to the message gateway, batched.

One HTTP call per code would not keep up on announcement morning. Each portal process
collects the codes asked for in a short window (50 ms by default, or until a batch is
full) and sends them as one call of `POST /v1/messages`, several calls side by side while
the gateway is slow: a registrant waits well under a second for the code to leave.

A failed send is never told to the person asking (the request already answered 202, the
same for everyone): it is logged without personal data and raised as the usual
`prakerja.partner.failed` event when a Prefect API is configured.

The work is bounded (portal.md, "Bounded work"): codes wait in a queue of at most
`max_queued`, and a batch goes to one of `senders` threads only when one is free, so a
gateway that stops answering fills the queue instead of memory. A code that finds the
queue full, or that was not handed to the gateway within `max_wait_s` (60 s) of being
asked for, is dropped and counted: by then the person has asked again or given up, and a
late code only confuses. Drops are logged as counts, at most every `LOG_EVERY_S`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from partners.client import PartnerFailure
from partners.notifier import NotifierClient

log = logging.getLogger("prakerja.portal")
TEMPLATE = "login_code"
MAX_QUEUED = 20_000  # about 40 s of announcement morning's peak of sign-ins, per process
MAX_WAIT_S = 60.0
LOG_EVERY_S = 10.0
_STOP = object()


class CodeSender:
    def __init__(
        self,
        notifier: NotifierClient,
        *,
        window_s: float = 0.05,
        max_batch: int | None = None,
        senders: int = 4,
        max_queued: int = MAX_QUEUED,
        max_wait_s: float = MAX_WAIT_S,
        on_failure: Callable[[PartnerFailure, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._window_s = window_s
        self._max_batch = max_batch or notifier.settings.batch_size
        self._max_wait_s = max_wait_s
        self._clock = clock
        # (asked at, phone, code); _STOP is put without waiting for room.
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._free = threading.Semaphore(senders)  # a batch waits here for a sender
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="code-send")
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._collect, name="code-batcher", daemon=True)
        self._counts_lock = threading.Lock()
        self._next_log = 0.0
        self._logged = (0, 0)
        self.sent = 0
        self.failed = 0
        self.dropped_full = 0  # the queue was full when the code was asked for
        self.dropped_late = 0  # not handed to the gateway within max_wait_s
        self._thread.start()

    def submit(self, phone: str, code: str) -> None:
        try:
            self._queue.put_nowait((self._clock(), phone, code))
        except queue.Full:
            with self._counts_lock:
                self.dropped_full += 1
            self._log_drops()

    def close(self, timeout: float = 5.0) -> None:
        self._put_stop(timeout)
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._log_drops(final=True)

    def _put_stop(self, timeout: float) -> None:
        """Tells the batcher to stop; a full queue gives way (its codes are not sent)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=0.1)
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    return
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def _fresh(self, items: list) -> list:
        """The items still worth sending; the others are counted as dropped."""
        oldest = self._clock() - self._max_wait_s
        fresh = [item for item in items if item[0] >= oldest]
        if len(fresh) < len(items):
            with self._counts_lock:
                self.dropped_late += len(items) - len(fresh)
            self._log_drops()
        return fresh

    def _log_drops(self, final: bool = False) -> None:
        """Counts only, and at most every LOG_EVERY_S: a flood must not become one."""
        now = time.monotonic()
        with self._counts_lock:
            counts = (self.dropped_full, self.dropped_late)
            if counts == self._logged or (now < self._next_log and not final):
                return
            self._next_log = now + LOG_EVERY_S
            full, late = counts[0] - self._logged[0], counts[1] - self._logged[1]
            self._logged = counts
        log.warning(
            "login codes: %d dropped (queue full), %d dropped (not sent within %.0f s)",
            full,
            late,
            self._max_wait_s,
        )

    def _collect(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self._window_s
            stop = False
            while len(batch) < self._max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            batch = self._fresh(batch)
            if batch:
                # Waits for a free sender: meanwhile the queue, not memory, takes the codes.
                self._free.acquire()
                self._pool.submit(self._send_then_free, batch)
            if stop:
                return

    def _send_then_free(self, batch: list[tuple[float, str, str]]) -> None:
        try:
            fresh = self._fresh(batch)  # it may have waited for a sender
            if fresh:
                self._send([(phone, code) for _, phone, code in fresh])
        finally:
            self._free.release()

    def _send(self, batch: list[tuple[str, str]]) -> None:
        messages = [
            {
                "idempotency_key": f"login:{uuid.uuid4().hex}",
                "channel": "sms",
                "to": phone,
                "template": TEMPLATE,
                "params": {"code": code},
            }
            for phone, code in batch
        ]
        try:
            answers = self._notifier.send(messages)
        except Exception as exc:  # never let the batcher die; never print the batch
            log.error("login codes: %d not sent: %s", len(messages), type(exc).__name__)
            self.failed += len(messages)
            return
        failures: dict[tuple[str, str], tuple[PartnerFailure, int]] = {}
        rejected = 0
        for answer in answers.values():
            if isinstance(answer, PartnerFailure):
                key = (answer.partner_id, answer.error_class)
                failures[key] = (answer, failures.get(key, (answer, 0))[1] + 1)
            elif answer.status != "ACCEPTED":
                rejected += 1
        for failure, n in failures.values():
            self.failed += n
            log.warning(
                "login codes: %d of %d not sent: %s %s",
                n,
                len(messages),
                failure.partner_id,
                failure.error_class,
            )
            if self._on_failure is not None:
                self._on_failure(failure, n)
        if rejected:
            log.info("login codes: the gateway refused %d of %d", rejected, len(messages))
        self.sent += len(messages) - sum(n for _, n in failures.values())
