"""The simulator's stateful partners: the card issuer's credits and the gateway's messages."""

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from partners.simulator.truth import person_truth

CreditBody = tuple[str, str, int, str, str]  # card_number, nik, amount, currency, reference


class IssuerState:
    """Credits by idempotency key, applied at most once, with a statement per reference."""

    def __init__(self, seed: str, journal: TextIO | None = None) -> None:
        self.seed = seed
        self._journal = journal
        self._lock = threading.Lock()
        self._credits: dict[str, tuple[CreditBody, dict[str, Any]]] = {}
        self._statements: dict[str, list[dict[str, Any]]] = {}
        self._transfers = 0
        self.applied = 0

    def restore(self, key: str, body: CreditBody, result: dict[str, Any]) -> None:
        """Replay one journal line (used when a restarted simulator loads its state)."""
        self._store(key, body, result)
        if result["status"] == "APPLIED":
            self._transfers = max(self._transfers, int(result["transfer_id"][2:]))

    def _store(self, key: str, body: CreditBody, result: dict[str, Any]) -> None:
        self._credits[key] = (body, result)
        if result["status"] == "APPLIED":
            self.applied += 1
            self._statements.setdefault(body[4], []).append(
                {
                    "transfer_id": result["transfer_id"],
                    "idempotency_key": key,
                    "card_number": body[0],
                    "amount": body[2],
                }
            )

    def apply(self, credits: list[tuple[str, CreditBody]]) -> list[dict[str, Any]]:
        """Apply a batch of (key, body); answer one result per item, in order."""
        results = []
        lines = []
        with self._lock:
            for key, body in credits:
                known = self._credits.get(key)
                if known is not None:
                    if known[0] == body:
                        results.append({**known[1], "replayed": True})
                    else:
                        # Not stored: the original result stays the key's truth.
                        results.append(
                            {
                                "idempotency_key": key,
                                "status": "CONFLICT",
                                "reason": "IDEMPOTENCY_KEY_REUSED",
                                "replayed": False,
                            }
                        )
                    continue
                if person_truth(self.seed, body[1]).credit_rejected:
                    result = {
                        "idempotency_key": key,
                        "status": "REJECTED",
                        "reason": "CARD_BLOCKED",
                        "replayed": False,
                    }
                else:
                    self._transfers += 1
                    result = {
                        "idempotency_key": key,
                        "status": "APPLIED",
                        "transfer_id": f"t-{self._transfers:09d}",
                        "replayed": False,
                    }
                self._store(key, body, result)
                results.append(result)
                if self._journal is not None:
                    lines.append({"type": "credit", "key": key, "body": body, "result": result})
            _write(self._journal, lines)
        return results

    def result(self, key: str) -> dict[str, Any] | None:
        known = self._credits.get(key)
        return None if known is None else known[1]

    def statement(self, reference: str, start: int, limit: int) -> tuple[list[dict], int | None]:
        """Entries [start, start+limit) of a reference's applied credits, and the next start."""
        with self._lock:
            entries = self._statements.get(reference, [])
            page = entries[start : start + limit]
            end = start + len(page)
            return page, (end if end < len(entries) else None)


RECEIVED_KEPT = 200_000


class NotifierState:
    """Messages by idempotency key: each key is accepted once, repeats answer the original."""

    def __init__(self, seed: str, journal: TextIO | None = None) -> None:
        self.seed = seed
        self._journal = journal
        self._lock = threading.Lock()
        self._messages: dict[str, list[Any]] = {}  # key -> [result, times seen]
        self.accepted = 0
        self.duplicate_keys = 0
        # What it was sent (newest last), so that a test or a person trying the demo can
        # read a sign-in code: `GET /_admin/messages`. Bounded; kept in memory only.
        self.received: deque[dict[str, Any]] = deque(maxlen=RECEIVED_KEPT)
        self._seq = 0

    def restore(self, key: str, result: dict[str, Any]) -> None:
        self._messages[key] = [result, 1]
        if result["status"] == "ACCEPTED":
            self.accepted += 1

    def send(
        self, messages: list[tuple[str, str]], items: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Accept a batch of (key, nik-or-phone used for the truth); one result per item.

        `items` (the messages as sent, same order) are kept in `received` when new.
        """
        results = []
        lines = []
        with self._lock:
            for i, (key, who) in enumerate(messages):
                known = self._messages.get(key)
                if known is not None:
                    known[1] += 1
                    if known[1] == 2:
                        self.duplicate_keys += 1
                    results.append(known[0])
                    continue
                if person_truth(self.seed, who).sms_rejected:
                    result = {"idempotency_key": key, "status": "REJECTED", "reason": "UNREACHABLE"}
                else:
                    result = {"idempotency_key": key, "status": "ACCEPTED"}
                    self.accepted += 1
                self._messages[key] = [result, 1]
                results.append(result)
                if items is not None:
                    self._seq += 1
                    item = items[i]
                    self.received.append(
                        {
                            "seq": self._seq,
                            "at": time.time(),
                            "idempotency_key": key,
                            "to": item.get("to"),
                            "template": item.get("template"),
                            "params": item.get("params"),
                            "status": result["status"],
                        }
                    )
                if self._journal is not None:
                    lines.append({"type": "message", "key": key, "result": result})
            _write(self._journal, lines)
        return results

    def find(
        self, *, template: str | None = None, to: str | None = None, after: int = 0, last: int = 100
    ) -> list[dict[str, Any]]:
        """Received messages after sequence number `after`, oldest first, at most `last`
        (the newest ones)."""
        with self._lock:
            found = [
                m
                for m in self.received
                if m["seq"] > after
                and (template is None or m["template"] == template)
                and (to is None or m["to"] == to)
            ]
        return found[-last:] if last else found

    def times_seen(self, key: str) -> int:
        known = self._messages.get(key)
        return 0 if known is None else known[1]


def _write(journal: TextIO | None, lines: list[dict[str, Any]]) -> None:
    if journal is None or not lines:
        return
    journal.write("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    # Flushed per batch so a killed simulator keeps what it answered.
    journal.flush()


def open_state(
    seed: str, state_path: str | Path | None
) -> tuple[IssuerState, NotifierState, TextIO | None]:
    """Load the JSON-lines journal at state_path (if any) and keep appending to it."""
    if state_path is None:
        return IssuerState(seed), NotifierState(seed), None
    path = Path(state_path)
    issuer, notifier = IssuerState(seed), NotifierState(seed)
    if path.exists():
        with path.open(encoding="utf-8") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    # A line cut by a crash mid-write was never answered: skip it.
                    continue
                if line["type"] == "credit":
                    issuer.restore(line["key"], tuple(line["body"]), line["result"])
                else:
                    notifier.restore(line["key"], line["result"])
    journal = path.open("a", encoding="utf-8")
    issuer._journal = notifier._journal = journal
    return issuer, notifier, journal
