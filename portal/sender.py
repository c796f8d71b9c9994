"""Sign-in codes to the message gateway, batched.

One HTTP call per code would not keep up on announcement morning. Each portal process
collects the codes asked for in a short window (50 ms by default, or until a batch is
full) and sends them as one call of `POST /v1/messages`, several calls side by side while
the gateway is slow: a registrant waits well under a second for the code to leave.

A failed send is never told to the person asking (the request already answered 202, the
same for everyone): it is logged without personal data and raised as the usual
`prakerja.partner.failed` event when a Prefect API is configured.
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
_STOP = object()


class CodeSender:
    def __init__(
        self,
        notifier: NotifierClient,
        *,
        window_s: float = 0.05,
        max_batch: int | None = None,
        senders: int = 4,
        on_failure: Callable[[PartnerFailure, int], None] | None = None,
    ) -> None:
        self._notifier = notifier
        self._window_s = window_s
        self._max_batch = max_batch or notifier.settings.batch_size
        self._queue: queue.Queue = queue.Queue()
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="code-send")
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._collect, name="code-batcher", daemon=True)
        self.sent = 0
        self.failed = 0
        self._thread.start()

    def submit(self, phone: str, code: str) -> None:
        self._queue.put((phone, code))

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=False)

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
            self._pool.submit(self._send, batch)
            if stop:
                return

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
