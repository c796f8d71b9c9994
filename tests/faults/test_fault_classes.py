"""Each fault class the simulator can inject, across every kind of partner, in a real wave.

One wave per fault class: the fault is set in the faults' [default] table (every partner
gets it at a moderate rate) and, for faults that can exhaust the retries, at rate 1.0 on
one payment provider (wallet-b) and on the message gateway, so that some registrants are
certainly left waiting. After that run every registrant's outcome is the oracle's or not
final yet (never a wrong REJECTED or NOT_SELECTED); then the faults are cleared and a rerun
gives exactly the oracle's outcomes, exit 0, a reconciled ledger, and asks no partner
again about work it had already answered.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from partners.config import simulator_config
from tests.faults.conftest import (
    PARTNER_KINDS,
    Call,
    answered,
    assert_nothing_asked_twice,
    assert_only_delayed,
    assert_oracle,
    exported,
    fast_partners,
    finish_cleanly,
    reconcile_now,
    report,
    run_wave,
    sent_keys,
)

STUCK_PAYMENT = "wallet-b"
SIM_TIMEOUT_S = 1.5
CLIENT_TIMEOUT_S = 0.5
RETRY_AFTER_S = 1


def _json(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return None


def _results(call: Call) -> list | None:
    body = _json(call.response) if call.status == 200 else None
    results = body.get("results") if isinstance(body, dict) else None
    return results if isinstance(results, list) else None


def _result_keys(call: Call) -> list:
    return [
        r.get("ref", r.get("idempotency_key")) for r in _results(call) or [] if isinstance(r, dict)
    ]


def _is_unreadable(call: Call) -> bool:
    return call.status == 200 and _json(call.response) is None


def _latency(call: Call) -> bool:
    return call.answered is not None and call.answered - call.started >= 0.03


def _timed_out(call: Call) -> bool:
    if call.answered is None:  # still held by the simulator, long after the client gave up
        return time.monotonic() - call.started >= CLIENT_TIMEOUT_S
    return call.answered - call.started >= SIM_TIMEOUT_S


def _missing(call: Call) -> bool:
    return _results(call) is not None and bool(set(sent_keys(call)) - set(_result_keys(call)))


def _duplicate(call: Call) -> bool:
    keys = _result_keys(call)
    return len(keys) != len(set(keys))


def _unknown_key(call: Call) -> bool:
    return _results(call) is not None and bool(set(_result_keys(call)) - set(sent_keys(call)))


def _unknown_status(call: Call) -> bool:
    return any(
        isinstance(r, dict) and (r.get("status") == "WEIRD" or "maybe" in r.values())
        for r in _results(call) or []
    )


GATING_PARTNERS = ("registry", *(a.id for a in simulator_config("http://x").agencies))
GATING = ("registry", "agency")  # a failure there holds the draw, so nothing later is called
# Small client batches: many calls per partner, so that each kind meets a fault that
# strikes a share of calls (the faults are reproducible, drawn per call from the seed).
# The partners that hold the draw retry more (cheap with tiny backoffs), so that the draw
# happens and the later partners meet the fault too.
MANY_CALLS = {
    "registry": {"batch_size": 20, "retry": {"attempts": 10}},
    "agency": {"batch_size": 100, "retry": {"attempts": 10}},
    "payment": {"batch_size": 4},
    "card-issuer": {"batch_size": 3},
    "notifier": {"batch_size": 8},
}


@dataclass(frozen=True)
class FaultClass:
    name: str
    default: dict  # the [default] table: every partner gets it
    evidence: Callable[[Call], bool]  # did this call get the fault?
    # Partners that get the fault on every call (their registrants certainly wait).
    stuck: dict = field(default_factory=dict)
    stuck_partners: tuple[str, ...] = (STUCK_PAYMENT, "notifier")
    # Partner kinds that must show the fault; "gating" means the registry or an agency.
    kinds: tuple[str, ...] = (*PARTNER_KINDS,)
    per_kind: dict = field(default_factory=lambda: dict(MANY_CALLS))
    client: dict = field(default_factory=dict)
    retry: dict = field(default_factory=lambda: {"attempts": 5})

    @property
    def delays(self) -> bool:
        """Whether some registrants must still be waiting after the faulty run."""
        return bool(self.stuck) and self.stuck_partners != GATING_PARTNERS


def _rate(name: str, rate: float = 0.3) -> dict:
    return {f"rate_{name}": rate}


FAULT_CLASSES = [
    FaultClass("latency", {"latency_ms": 30}, _latency, per_kind={}),
    FaultClass(
        "429-retry-after",
        {**_rate("429", 0.2), "retry_after_s": RETRY_AFTER_S},
        lambda c: c.status == 429,
        stuck=_rate("429", 1.0),
        # Each 429 costs a second: few calls, and the kinds sure to meet one. Those that
        # hold the draw may wait 4 times; the stuck ones give up after one wait.
        kinds=("gating", "payment", "notifier"),
        per_kind={k: {"retry": {"attempts": 2}} for k in ("payment", "notifier")},
        retry={"attempts": 5, "total_s": 4.5},
    ),
    FaultClass(
        "5xx",
        _rate("5xx"),
        lambda c: c.status in (500, 502, 503, 504) and not c.dropped,
        stuck=_rate("5xx", 1.0),
    ),
    FaultClass("dropped-connection", _rate("drop"), lambda c: c.dropped, stuck=_rate("drop", 1.0)),
    FaultClass(
        "read-timeout",
        {**_rate("timeout", 0.2), "timeout_s": SIM_TIMEOUT_S},
        _timed_out,
        stuck=_rate("timeout", 1.0),
        # Each timeout costs the client's read timeout: few calls, few retries where the
        # partner is stuck, more where a slow answer would hold the draw.
        kinds=("gating", "payment", "notifier"),
        per_kind={k: {"retry": {"attempts": 8, "total_s": 10}} for k in GATING},
        client={"timeout_s": CLIENT_TIMEOUT_S},
        retry={"attempts": 2},
    ),
    FaultClass(
        "invalid-json",
        _rate("bad_json"),
        lambda c: c.status == 200 and c.response.startswith(b"<html"),
        stuck=_rate("bad_json", 1.0),
    ),
    FaultClass(
        "truncated-json",
        _rate("truncated_json"),
        lambda c: _is_unreadable(c) and not c.response.startswith(b"<html"),
        stuck=_rate("truncated_json", 1.0),
    ),
    FaultClass(
        "missing-results",
        _rate("missing_result", 0.1),
        _missing,
        stuck=_rate("missing_result", 1.0),
    ),
    FaultClass("duplicate-results", _rate("duplicate_result", 0.5), _duplicate),
    FaultClass("unknown-keys", _rate("unknown_key", 1.0), _unknown_key),
    FaultClass(
        "unknown-statuses",
        _rate("unknown_status", 0.1),
        _unknown_status,
        stuck=_rate("unknown_status", 1.0),
    ),
    FaultClass(
        "401-refused-credentials",
        {},
        lambda c: c.status == 401,
        stuck={"api_key": "not-the-key-the-client-sends"},
        stuck_partners=(STUCK_PAYMENT, "card-issuer"),
        kinds=("payment", "card-issuer"),
    ),
    FaultClass(
        "413-split",
        {"batch_size": 4},
        lambda c: c.status == 413,
        # The registry and agencies take 50 a call, the others 4: every kind refuses some.
        stuck={"batch_size": 50},
        stuck_partners=GATING_PARTNERS,
        per_kind={},
    ),
    FaultClass(
        "credit-applied-answer-lost",
        _rate("lost_answer", 1.0),
        lambda c: c.status == 503 and b"answer lost" in c.response,
        stuck=_rate("lost_answer", 1.0),
        stuck_partners=("card-issuer",),
        kinds=("card-issuer",),
        per_kind={"card-issuer": {"batch_size": 10}},
    ),
]


def _faults(fault: FaultClass) -> dict:
    faults: dict = {"seed": f"faults-{fault.name}", "default": dict(fault.default)}
    if fault.stuck:
        faults["partners"] = {p: {**fault.default, **fault.stuck} for p in fault.stuck_partners}
    return faults


@pytest.mark.parametrize("fault", FAULT_CLASSES, ids=lambda f: f.name)
def test_a_partner_fault_delays_registrants_and_never_rejects_them(
    fault, prefect_server, sessions, simulator, wave_files, tmp_path
):
    simulator.set_faults(_faults(fault))
    config = fast_partners(
        simulator.base_url, per_kind=fault.per_kind, retry=fault.retry, **fault.client
    )
    code = run_wave(wave_files.export, config)
    calls = simulator.calls()
    got = exported(sessions, tmp_path)
    rep = report(sessions)

    # Nobody got a final outcome the partners' truth does not imply.
    outcomes = assert_only_delayed(got, wave_files.expected)
    stats = simulator.stats()
    assert stats["calls"] == dict(Counter(c.partner for c in calls)), "the log saw every call"
    hit = Counter(c.kind for c in calls if fault.evidence(c))
    hit["gating"] = hit["registry"] + hit["agency"]
    missed = [kind for kind in fault.kinds if not hit[kind]]
    assert not missed, f"no call to {missed} got the {fault.name} fault: {dict(hit)}"
    assert rep["draw"]["drawn"], rep["pending_by_partner"]

    if fault.delays:
        assert code == 3
        assert outcomes["PENDING"] > 0
        waiting = rep["pending_by_partner"]
        for partner in fault.stuck_partners:
            if partner == "notifier":
                assert rep["messages"].get("QUEUED", 0) > 0
            else:
                stage = "PENDING_ACCOUNT" if partner == STUCK_PAYMENT else "PENDING_ROLLOUT"
                assert waiting.get(f"{stage}:{partner}", 0) > 0, waiting
    else:
        # Faults the client absorbs delay nobody: the first run already ends the wave.
        assert code == 0, rep["pending_by_partner"]
        assert_oracle(got, wave_files.expected)
        recon = reconcile_now()
        assert recon["ok"], recon

    if fault.name == "429-retry-after":
        _assert_waited_for_retry_after(calls, attempts=fault.retry["attempts"])
    if fault.name == "413-split":
        _assert_split_below_the_partner_limit(calls)
    if fault.name == "401-refused-credentials":
        _assert_refused_once(calls, sessions)

    if fault.delays:
        # The faults end: a rerun asks only about what is still open and ends the wave.
        before = answered(sessions)
        finish = finish_cleanly(
            simulator, sessions, wave_files, tmp_path, fast_partners(simulator.base_url)
        )
        sent = assert_nothing_asked_twice(before, finish.calls)
        if fault.name == "credit-applied-answer-lost":
            # Every credit was applied and its answer lost: the rerun looks each key up
            # and sends none again.
            lookups = [c for c in finish.calls if c.path.startswith("/issuer/v1/credits/")]
            assert sent["card-issuer"] == 0 and len(lookups) == outcomes["PENDING"]
            return
        for partner in fault.stuck_partners:
            kind = "payment" if partner == STUCK_PAYMENT else partner
            assert sent[kind] > 0, sent


def _assert_waited_for_retry_after(calls: list[Call], attempts: int) -> None:
    """A 429 is answered by waiting at least Retry-After, then one call, never a burst."""
    by_batch: dict[tuple[str, bytes], list[Call]] = defaultdict(list)
    for call in calls:
        by_batch[(call.path, call.request)].append(call)
    retried = 0
    for (path, _body), tries in by_batch.items():
        tries.sort(key=lambda c: c.started)
        assert len(tries) <= attempts, f"{path}: {len(tries)} calls for one batch"
        for previous, following in zip(tries, tries[1:], strict=False):
            if path.startswith("/issuer/v1/credits/") or path.startswith("/issuer/v1/statements"):
                continue  # GETs: a later lookup of the same key is not a retry
            assert previous.status == 429, f"{path}: called again after {previous.status}"
            waited = following.started - previous.answered
            assert waited >= RETRY_AFTER_S - 0.01, f"{path}: retried after {waited:.3f} s"
            retried += 1
    n429 = sum(1 for c in calls if c.status == 429)
    assert retried > 0
    # Every call is a batch's first call or the one retry that follows a 429.
    assert len(calls) <= len(by_batch) + n429


def _assert_split_below_the_partner_limit(calls: list[Call]) -> None:
    """Calls above a partner's limit are refused, then split until they fit; each client
    learns its partner's limit, so refusals are few, not one per batch."""
    refused = [c for c in calls if c.status == 413]
    for call in calls:
        limit = 50 if call.kind in GATING else 4
        if call.status == 413:
            assert len(sent_keys(call)) > limit
        elif call.method == "POST":
            assert call.status == 200 and len(sent_keys(call)) <= limit
    per_partner = Counter(c.partner for c in refused)
    assert max(per_partner.values()) <= 8, per_partner


def _assert_refused_once(calls: list[Call], sessions) -> None:
    """Refused credentials: one call per batch, no retry; the items wait for a person."""
    from sqlalchemy import select

    from models.tables import Registrant

    refused = [c for c in calls if c.status == 401]
    bodies = Counter((c.path, c.request) for c in refused)
    assert refused and max(bodies.values()) == 1, "a refused batch was sent again"
    # Refused credentials count as failed calls: after breaker_threshold (5) of them the
    # breaker stops calling that partner, and the rest of the stage waits at once.
    per_partner = Counter(c.partner for c in calls if c.method == "POST")
    assert per_partner["card-issuer"] <= 5 and per_partner[STUCK_PAYMENT] <= 5, per_partner
    with sessions() as session:
        errors = Counter(
            session.execute(
                select(Registrant.pending_error).where(Registrant.pending_partner.is_not(None))
            ).scalars()
        )
    assert errors["HTTPStatus401: HTTP 401 credentials refused"] > 0, errors
    assert set(errors) <= {
        "HTTPStatus401: HTTP 401 credentials refused",
        "CircuitOpen: circuit open",
    }, errors


def test_refused_credentials_are_asked_once_and_need_a_person_for_every_kind(simulator):
    """401 from each kind of partner, through its own client over HTTP: one call, no retry,
    every item a failure that a person must look at (retrying later will not cure it)."""
    from partners.client import PartnerError, PartnerFailure
    from partners.wiring import build_partners

    simulator.set_faults({"default": {"api_key": "not-the-key-the-client-sends"}})
    partners = build_partners(fast_partners(simulator.base_url))
    nik = "3171010101900001"
    record = {"nik": nik, "full_name": "Budi", "birth_date": "1990-01-01", "kk_number": nik}
    credit = {
        "card_number": "5049000000000001",
        "nik": nik,
        "amount": 1_000_000,
        "currency": "IDR",
        "reference": "wave-1/training",
    }
    message = {"channel": "sms", "to": "+6281234567890", "template": "t", "params": {}}
    calls = {
        "registry": lambda i: partners.registry.verify([{**record, "ref": i}]),
        "civil-service": lambda i: partners.agencies[0].check([{"ref": i, "nik": nik}]),
        "bank-a": lambda i: partners.payments["bank-a"].verify(
            [{"ref": i, "account": "1", "nik": nik, "phone": "+6281234567890"}]
        ),
        "card-issuer": lambda i: partners.issuer.credit([{**credit, "idempotency_key": i}]),
        "notifier": lambda i: partners.notifier.send([{**message, "idempotency_key": i}]),
    }
    try:
        for partner, call in calls.items():
            before = simulator.stats()["calls"].get(partner, 0)
            answers = call(f"w1:{nik}:{partner}")
            assert simulator.stats()["calls"][partner] == before + 1, partner
            (failure,) = answers.values()
            assert isinstance(failure, PartnerFailure)
            assert (failure.error_class, failure.needs_person) == ("HTTPStatus401", True)
        lookup = partners.issuer.lookup(f"w1:{nik}:training")
        assert isinstance(lookup, PartnerFailure) and lookup.needs_person
        try:
            list(partners.issuer.statement("wave-1/training"))
        except PartnerError as exc:
            assert exc.failure.needs_person
        else:
            raise AssertionError("a statement read with a refused key")
    finally:
        partners.close()


@pytest.fixture
def database_url(tmp_path, monkeypatch) -> str:
    """SQLite only: partner-fault handling does not depend on the database engine, and
    these waves are the slowest tests (the engines are compared in tests/tasks, e2e, cli)."""
    url = f"sqlite:///{tmp_path}/prakerja.db"
    monkeypatch.setenv("PRAKERJA_DATABASE_URL", url)
    return url
