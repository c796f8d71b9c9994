"""The dashboard behind a proxy and under attack (portal.md, "Behind a proxy, and under
attack"; issue 21). Bounded work: the code sender with a gateway that stops answering (a
fake at the edge) keeps a bounded queue, and drops and counts what it cannot send in
time.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from types import SimpleNamespace


class BlockedGateway:
    """The notifier at the edge: records what it is handed, and answers only when let."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.received: list[dict] = []
        self.calls = 0

    def send(self, messages: list[dict]) -> dict:
        self.calls += 1
        self.open.wait(30)
        self.received += messages
        return {m["idempotency_key"]: SimpleNamespace(status="ACCEPTED") for m in messages}


def _until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_code_queue_drops_and_counts_codes_instead_of_growing(caplog):
    from portal.sender import CodeSender

    gateway = BlockedGateway()
    sender = CodeSender(
        gateway,  # type: ignore[arg-type]
        window_s=0.001,
        max_batch=1,
        senders=1,
        max_queued=3,
    )
    caplog.set_level(logging.WARNING, logger="prakerja.portal")
    try:
        phones = [f"+6281200000{i:03d}" for i in range(20)]
        for i, phone in enumerate(phones):
            sender.submit(phone, f"{i:06d}")
        # One code at the gateway, one batch waiting for a sender, three in the queue.
        assert sender.dropped_full >= 20 - 5
        gateway.open.set()
        _until(lambda: len(gateway.received) == 20 - sender.dropped_full)
    finally:
        gateway.open.set()
        sender.close()
    assert len(gateway.received) + sender.dropped_full == 20
    assert sender.dropped_late == 0
    full = sum(
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) dropped \(queue full\)", r.getMessage()))
    )
    assert full == sender.dropped_full  # counted in the log, a line every 10 s at most
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert not [p for p in phones if p in logged]


def test_a_code_not_handed_to_the_gateway_within_60_s_is_dropped(caplog):
    from portal.sender import CodeSender

    gateway = BlockedGateway()
    clock = SimpleNamespace(now=1000.0)
    sender = CodeSender(
        gateway,  # type: ignore[arg-type]
        window_s=0.001,
        max_batch=1,
        senders=1,
        clock=lambda: clock.now,
    )
    caplog.set_level(logging.WARNING, logger="prakerja.portal")
    try:
        sender.submit("+62812000001", "111111")
        _until(lambda: gateway.calls == 1)  # at the gateway, which does not answer
        sender.submit("+62812000002", "222222")  # batched, waiting for the sender
        sender.submit("+62812000003", "333333")  # still in the queue
        time.sleep(0.05)
        clock.now += 61
        gateway.open.set()
        _until(lambda: sender.dropped_late == 2)
    finally:
        gateway.open.set()
        sender.close()
    assert [m["params"]["code"] for m in gateway.received] == ["111111"]
    assert sender.dropped_full == 0
    late = sum(
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) dropped \(not sent within 60 s\)", r.getMessage()))
    )
    assert late == 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "+62812" not in logged and "222222" not in logged
