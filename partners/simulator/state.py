"""The simulator's stateful partners: the card issuer's credits and revocations, the
gateway's messages, the payment partners' disbursements, and what the admin routes set
(agency listings, deaths, cards used at the issuer, failing accounts, the clock). All of it
is journaled (JSON lines at state_path) so that a restarted simulator keeps it."""

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from partners.simulator.lives import Clock, Training, check_scripted
from partners.simulator.truth import disbursement_failure, person_truth

CreditBody = tuple[str, str, int, str, str]  # card_number, nik, amount, currency, reference
RevocationBody = tuple[str, str, str]  # card_number, reason, reference
DisbursementBody = tuple[str, str, int, str, str]  # account, nik, amount, currency, reference
REVOCATION_REASONS = ("NO_TRAINING_IN_TIME", "BLACKLISTED")


class IssuerState:
    """Credits by idempotency key, applied at most once, with a statement per reference."""

    def __init__(
        self, seed: str, journal: TextIO | None = None, training: Training | None = None
    ) -> None:
        self.seed = seed
        self._journal = journal
        self._lock = threading.Lock()
        self._credits: dict[str, tuple[CreditBody, dict[str, Any]]] = {}
        self._statements: dict[str, list[dict[str, Any]]] = {}
        self._transfers = 0
        self.applied = 0
        # The cards' lives, the simulated clock, and the revocations by key:
        # key -> [body, result, times received].
        self.training = training if training is not None else Training(seed, Clock())
        self.clock = self.training.clock
        self._revocations: dict[str, list[Any]] = {}
        self.revoked = 0

    def restore(
        self,
        key: str,
        body: CreditBody,
        result: dict[str, Any],
        at: float | None = None,
        life: bool = False,
    ) -> None:
        """Replay one journal line (used when a restarted simulator loads its state)."""
        self._store(key, body, result)
        if result["status"] == "APPLIED":
            self._transfers = max(self._transfers, int(result["transfer_id"][2:]))
            if at is not None:
                self.training.credited(body[0], body[2], at, life)

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
        training = self.training
        now = self.clock.now()
        seeded = training.lives == "seeded"
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
                    training.credited(body[0], body[2], now, seeded)
                self._store(key, body, result)
                results.append(result)
                if self._journal is not None:
                    line: dict[str, Any] = {
                        "type": "credit",
                        "key": key,
                        "body": body,
                        "result": result,
                    }
                    if result["status"] == "APPLIED":
                        line["at"] = now
                        line["life"] = seeded
                    lines.append(line)
            _write(self._journal, lines)
        return results

    def revoke(self, revocations: list[tuple[str, RevocationBody]]) -> list[dict[str, Any]]:
        """Close a batch of cards (key, body); one result per item, in order."""
        results = []
        lines = []
        now = self.clock.now()
        with self._lock:
            for key, body in revocations:
                known = self._revocations.get(key)
                if known is not None:
                    known[2] += 1
                    if known[0][:2] == body[:2]:
                        results.append({**known[1], "replayed": True})
                    else:
                        results.append(_conflict(key, "IDEMPOTENCY_KEY_REUSED"))
                    continue
                result = self._revoke_card(key, body, now)
                self._revocations[key] = [body, result, 1]
                results.append(result)
                if self._journal is not None:
                    lines.append(
                        {
                            "type": "revocation",
                            "key": key,
                            "body": body,
                            "result": result,
                            "at": now,
                        }
                    )
            _write(self._journal, lines)
        return results

    def _revoke_card(self, key: str, body: RevocationBody, now: float) -> dict[str, Any]:
        card, reason, _ = body
        if card in self.training.revoked:
            return _conflict(key, "ALREADY_REVOKED")
        view = self.training.card_view(card, now)
        if view is None:
            return _conflict(key, "UNKNOWN_CARD")
        amount, spent, used = view
        if reason == "NO_TRAINING_IN_TIME" and used:
            return {"idempotency_key": key, "status": "CARD_USED", "replayed": False}
        self.training.revoke(card, now)
        self.revoked += 1
        return {
            "idempotency_key": key,
            "status": "REVOKED",
            "amount_returned": max(0, amount - spent),
            "replayed": False,
        }

    def restore_revocation(
        self, key: str, body: RevocationBody, result: dict[str, Any], at: float
    ) -> None:
        self._revocations[key] = [body, result, 1]
        if result["status"] == "REVOKED":
            self.revoked += 1
            self.training.revoke(body[0], at)

    def revocation(self, key: str) -> dict[str, Any] | None:
        known = self._revocations.get(key)
        return None if known is None else known[1]

    def revocations(self) -> list[dict[str, Any]]:
        """Every revocation key received, for the admin route."""
        with self._lock:
            return [
                {
                    "idempotency_key": key,
                    "card_number": body[0],
                    "reason": body[1],
                    "status": result["status"],
                    "amount_returned": result.get("amount_returned"),
                    "times_received": times,
                }
                for key, (body, result, times) in self._revocations.items()
            ]

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


def _conflict(key: str, reason: str) -> dict[str, Any]:
    return {"idempotency_key": key, "status": "CONFLICT", "reason": reason, "replayed": False}


class PaymentState:
    """Each payment partner's disbursements by idempotency key, paid at most once, with a
    statement per reference of what was paid."""

    def __init__(self, seed: str, journal: TextIO | None = None) -> None:
        self.seed = seed
        self._journal = journal
        self._lock = threading.Lock()
        # provider -> key -> [body, result, times received]
        self._keys: dict[str, dict[str, list[Any]]] = {}
        self._statements: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._transfers: dict[str, int] = {}
        # provider -> account -> the reason every disbursement to it fails (admin route)
        self.failing: dict[str, dict[str, str]] = {}
        self.completed = 0
        self.failed = 0

    def set_failing(self, provider: str, account: str, reason: str) -> None:
        with self._lock:
            self.failing.setdefault(provider, {})[account] = reason
            _write(
                self._journal,
                [{"type": "payment_fail", "provider": provider, "account": account,
                  "reason": reason}],
            )  # fmt: skip

    def _store(
        self, provider: str, key: str, body: DisbursementBody, result: dict[str, Any]
    ) -> None:
        self._keys.setdefault(provider, {})[key] = [body, result, 1]
        if result["status"] == "COMPLETED":
            self.completed += 1
            self._statements.setdefault((provider, body[4]), []).append(
                {
                    "transfer_id": result["transfer_id"],
                    "idempotency_key": key,
                    "account": body[0],
                    "amount": body[2],
                }
            )
        else:
            self.failed += 1

    def restore(
        self, provider: str, key: str, body: DisbursementBody, result: dict[str, Any]
    ) -> None:
        self._store(provider, key, body, result)
        if result["status"] == "COMPLETED":
            n = int(result["transfer_id"][2:])
            self._transfers[provider] = max(self._transfers.get(provider, 0), n)

    def disburse(
        self, provider: str, items: list[tuple[str, DisbursementBody]]
    ) -> list[dict[str, Any]]:
        """Pay a batch of (key, body) at `provider`; one result per item, in order."""
        results = []
        lines = []
        with self._lock:
            keys = self._keys.setdefault(provider, {})
            failing = self.failing.get(provider, {})
            for key, body in items:
                known = keys.get(key)
                if known is not None:
                    known[2] += 1
                    if known[0][:3] == body[:3]:
                        results.append({**known[1], "replayed": True})
                    else:
                        results.append(_conflict(key, "IDEMPOTENCY_KEY_REUSED"))
                    continue
                account, nik = body[0], body[1]
                reason = failing.get(account) or disbursement_failure(self.seed, nik, account)
                if reason is not None:
                    result = {
                        "idempotency_key": key,
                        "status": "FAILED",
                        "reason": reason,
                        "replayed": False,
                    }
                else:
                    n = self._transfers[provider] = self._transfers.get(provider, 0) + 1
                    result = {
                        "idempotency_key": key,
                        "status": "COMPLETED",
                        "transfer_id": f"d-{n:09d}",
                        "replayed": False,
                    }
                self._store(provider, key, body, result)
                results.append(result)
                if self._journal is not None:
                    lines.append(
                        {"type": "disbursement", "provider": provider, "key": key,
                         "body": body, "result": result}
                    )  # fmt: skip
            _write(self._journal, lines)
        return results

    def result(self, provider: str, key: str) -> dict[str, Any] | None:
        known = self._keys.get(provider, {}).get(key)
        return None if known is None else known[1]

    def statement(
        self, provider: str, reference: str, start: int, limit: int
    ) -> tuple[list[dict], int | None]:
        """Entries [start, start+limit) of what was paid under a reference, and the next start."""
        with self._lock:
            entries = self._statements.get((provider, reference), [])
            page = entries[start : start + limit]
            end = start + len(page)
            return page, (end if end < len(entries) else None)

    def listing(self, provider: str) -> list[dict[str, Any]]:
        """Every key the provider received, for the admin route."""
        with self._lock:
            return [
                {
                    "idempotency_key": key,
                    "account": body[0],
                    "nik": body[1],
                    "amount": body[2],
                    "status": result["status"],
                    "reason": result.get("reason"),
                    "transfer_id": result.get("transfer_id"),
                    "times_received": times,
                }
                for key, (body, result, times) in self._keys.get(provider, {}).items()
            ]


class Rechecks:
    """What the admin routes changed in the registry's and the agencies' answers (for the
    re-checks before a payment): NIKs an agency now lists, NIKs now dead."""

    def __init__(self, journal: TextIO | None = None) -> None:
        self._journal = journal
        self.listed: dict[str, set[str]] = {}  # agency -> NIKs
        self.deceased: set[str] = set()

    def list_nik(self, agency: str, nik: str, journal: bool = True) -> None:
        self.listed.setdefault(agency, set()).add(nik)
        if journal:
            _write(self._journal, [{"type": "agency_list", "agency": agency, "nik": nik}])

    def set_deceased(self, nik: str, journal: bool = True) -> None:
        self.deceased.add(nik)
        if journal:
            _write(self._journal, [{"type": "deceased", "nik": nik}])


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


_JOURNAL_LOCK = threading.Lock()


def _write(journal: TextIO | None, lines: list[dict[str, Any]]) -> None:
    if journal is None or not lines:
        return
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    with _JOURNAL_LOCK:  # the partners share one journal
        journal.write(text)
        # Flushed per batch so a killed simulator keeps what it answered.
        journal.flush()


@dataclass
class State:
    """Every stateful part of the simulator, sharing one journal (None: memory only)."""

    issuer: IssuerState
    notifier: NotifierState
    payments: PaymentState
    rechecks: Rechecks
    training: Training
    clock: Clock
    journal: TextIO | None

    def set_clock(self, at: float) -> None:
        self.clock.set(at)
        _write(self.journal, [{"type": "clock", "offset": self.clock.offset}])

    def set_card_used(self, card: str) -> None:
        self.training.used_at_issuer.add(card)
        _write(self.journal, [{"type": "card_used", "card_number": card}])

    def script_events(self, platform: int, events: list[dict[str, Any]]) -> None:
        """Scripted events (checked), delivered now; journaled with their delivery time."""
        delivery = self.clock.now()
        self.training.script(platform, events, delivery)
        plain = [{k: v for k, v in ev.items() if k != "_at"} for ev in events]
        line = {"type": "training_events", "platform": platform, "delivery": delivery}
        _write(self.journal, [{**line, "events": plain}])


def open_journal(seed: str, state_path: str | Path | None, lives: str = "seeded") -> State:
    """Load the JSON-lines journal at state_path (if any) and keep appending to it."""
    clock = Clock()
    training = Training(seed, clock, lives)
    issuer, notifier = IssuerState(seed, training=training), NotifierState(seed)
    payments, rechecks = PaymentState(seed), Rechecks()
    state = State(issuer, notifier, payments, rechecks, training, clock, None)
    if state_path is None:
        return state
    path = Path(state_path)
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
                kind = line["type"]
                if kind == "credit":
                    issuer.restore(
                        line["key"],
                        tuple(line["body"]),
                        line["result"],
                        line.get("at"),
                        bool(line.get("life")),
                    )
                elif kind == "message":
                    notifier.restore(line["key"], line["result"])
                elif kind == "revocation":
                    issuer.restore_revocation(
                        line["key"], tuple(line["body"]), line["result"], line["at"]
                    )
                elif kind == "disbursement":
                    payments.restore(
                        line["provider"], line["key"], tuple(line["body"]), line["result"]
                    )
                elif kind == "payment_fail":
                    payments.failing.setdefault(line["provider"], {})[line["account"]] = line[
                        "reason"
                    ]
                elif kind == "agency_list":
                    rechecks.list_nik(line["agency"], line["nik"], journal=False)
                elif kind == "deceased":
                    rechecks.set_deceased(line["nik"], journal=False)
                elif kind == "card_used":
                    training.used_at_issuer.add(line["card_number"])
                elif kind == "clock":
                    clock.offset = float(line["offset"])
                elif kind == "training_events":
                    events = check_scripted(line["events"])
                    training.script(line["platform"], events, line["delivery"])
    journal = path.open("a", encoding="utf-8")
    issuer._journal = notifier._journal = payments._journal = rechecks._journal = journal
    state.journal = journal
    return state


def open_state(
    seed: str, state_path: str | Path | None
) -> tuple[IssuerState, NotifierState, TextIO | None]:
    """The issuer, the gateway and the journal of open_journal (the older interface)."""
    state = open_journal(seed, state_path)
    return state.issuer, state.notifier, state.journal
