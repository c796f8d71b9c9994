"""Helpers for the fault tests: a small wave, the simulator with a request log, the oracle.

Every test here runs real waves (Prefect, the database, the partner simulator over HTTP)
with injected faults, then checks each registrant's outcome against the oracle of
tests/e2e/oracle.py: a fault may delay someone (PENDING, or not yet final), never give a
final outcome the partners' truth does not imply.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.oracle import expected_outcomes, read_truth

SEED = "faults-seed"
LOTTERY = "faults-lottery"
REFERENCE = date(2026, 11, 28)
REGISTRANTS = 500
QUOTA = 40
FAST_RETRY = dict(attempts=4, total_s=5, backoff_s=0.01, backoff_max_s=0.05)
# Outcomes a registrant may show while a wave is delayed; final ones must match the oracle.
FINAL = {"REJECTED", "NOT_SELECTED", "CREDITED"}
NOT_FINAL = {"PENDING", "ELIGIBLE", "WAITLISTED", "SELECTED", "CONFIRMED"}


# ------------------------------------------------------------------ the export and its truth
@dataclass
class WaveFiles:
    export: Path
    truth_path: Path
    truth: list[dict]
    expected: dict[int, tuple[str, str]]


def make_wave_files(directory: Path, *, registrants: int = REGISTRANTS, quota: int = QUOTA):
    from partners.simulator.generate import generate_export

    export, truth_path = directory / "wave.csv", directory / "truth.csv"
    generate_export(
        export, registrants=registrants, seed=SEED, reference_date=REFERENCE, truth_path=truth_path
    )
    truth = read_truth(str(truth_path), str(export))
    return WaveFiles(export, truth_path, truth, expected_outcomes(truth, seed=LOTTERY, quota=quota))


@pytest.fixture(scope="session")
def wave_files(tmp_path_factory) -> WaveFiles:
    return make_wave_files(tmp_path_factory.mktemp("faults-wave"))


# ------------------------------------------------------------------ the simulator, logged
PARTNER_KINDS = ("registry", "agency", "payment", "card-issuer", "notifier")


def partner_of(path: str) -> tuple[str, str]:
    """(kind, partner id) of a simulator route, as the simulator names them."""
    parts = path.strip("/").split("/")
    if parts[0] == "registry":
        return "registry", "registry"
    if parts[0] == "agency":
        return "agency", parts[1]
    if parts[0] == "payment":
        return "payment", parts[1]
    if parts[0] == "issuer":
        return "card-issuer", "card-issuer"
    if parts[0] == "notify":
        return "notifier", "notifier"
    return "admin", parts[0]


@dataclass
class Call:
    method: str
    path: str
    kind: str
    partner: str
    started: float
    request: bytes = b""
    status: int | None = None
    answered: float | None = None
    dropped: bool = False
    response: bytes = b""


class _Recorder:
    """Pure ASGI middleware: logs every partner call (time, request body, status, answer)."""

    def __init__(self, app: Any, log: list[Call]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_admin"):
            await self.app(scope, receive, send)
            return
        kind, partner = partner_of(scope["path"])
        call = Call(scope["method"], scope["path"], kind, partner, time.monotonic())
        self.log.append(call)  # at once: a call held by a timeout fault is counted already
        chunks: list[bytes] = []
        answer: list[bytes] = []

        async def logged_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def logged_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
                call.answered = time.monotonic()
                transport = scope.get("simulator.transport")
                call.dropped = bool(transport is not None and transport.is_closing())
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, logged_receive, logged_send)
        finally:
            call.request = b"".join(chunks)
            call.response = b"".join(answer)


class Simulator:
    """The simulator on a thread, with its calls logged and its admin endpoints at hand."""

    def __init__(self) -> None:
        from partners.simulator.server import SimulatorThread

        self.thread = SimulatorThread(SEED)
        self.log: list[Call] = []
        self.thread.app.add_middleware(_Recorder, log=self.log)
        self.base_url = self.thread.base_url
        self.http = requests.Session()

    def set_faults(self, faults: dict[str, Any]) -> None:
        response = self.http.post(f"{self.base_url}/_admin/faults", json=faults, timeout=5)
        assert response.status_code == 200, response.text

    def stats(self) -> dict[str, Any]:
        return self.http.get(f"{self.base_url}/_admin/stats", timeout=5).json()

    def mark(self) -> int:
        """A position in the call log, to look at the calls made after it."""
        return len(self.log)

    def calls(self, since: int = 0, *, kind: str | None = None, partner: str | None = None):
        return [
            c
            for c in self.log[since:]
            if (kind is None or c.kind == kind) and (partner is None or c.partner == partner)
        ]


@pytest.fixture
def simulator():
    sim = Simulator()
    sim.thread.start()
    try:
        yield sim
    finally:
        sim.http.close()
        sim.thread.stop()


# ------------------------------------------------------------------ partners and runs
def fast_partners(base_url: str, *, per_kind: dict[str, dict] | None = None, **overrides: Any):
    """The simulator's partners file with quick retries (and any other setting overridden).

    `per_kind` maps a partner kind (see PARTNER_KINDS) to settings for its partners only;
    a "retry" entry there, or in `overrides`, updates FAST_RETRY.
    """
    from partners.config import PartnersConfig, RetrySettings, simulator_config

    config = simulator_config(base_url)

    def fast(settings, kind: str):
        changes = {**overrides, **(per_kind or {}).get(kind, {})}
        retry = {**FAST_RETRY, **overrides.get("retry", {}), **changes.pop("retry", {})}
        return replace(settings, retry=RetrySettings(**retry), **changes)

    return PartnersConfig(
        registry=fast(config.registry, "registry"),
        agencies=tuple(fast(a, "agency") for a in config.agencies),
        payment_providers={k: fast(p, "payment") for k, p in config.payment_providers.items()},
        card_issuer=fast(config.card_issuer, "card-issuer"),
        notifier=fast(config.notifier, "notifier"),
        source=config.source,
    )


def run_wave(export: Path, partners_config, *, quota: int = QUOTA, **kw: Any) -> int:
    from cli import run_wave_command

    return run_wave_command(
        wave_id=1,
        registrants=str(export),
        quota=quota,
        lottery_seed=LOTTERY,
        keep_open=kw.pop("keep_open", False),
        draw_without_pending=kw.pop("draw_without_pending", False),
        flags={"reference_date": datetime.combine(REFERENCE, dtime()), **kw},
        partners_config=partners_config,
        quiet=True,
    )


def exported(sessions, directory: Path) -> dict[int, tuple[str, str]]:
    """line -> (outcome, reason), read back from `wave export`'s file."""
    from readmodels.reporting import export_outcomes

    out = directory / f"outcomes-{time.monotonic_ns()}.csv"
    export_outcomes(sessions, 1, out)
    with open(out, newline="", encoding="utf-8") as fh:
        return {int(r["line"]): (r["outcome"], r["reason"]) for r in csv.DictReader(fh)}


def report(sessions) -> dict:
    from readmodels.reporting import wave_report

    with sessions() as session:
        return wave_report(session, 1)


def reconcile_now() -> dict:
    from readmodels.reporting import reconcile
    from runtime.app import get_runtime

    rt = get_runtime()
    return reconcile(rt.sessions, rt.partners.issuer, 1)


def assert_only_delayed(got: dict, expected: dict) -> Counter:
    """Every outcome is the oracle's, or not final yet; returns the count of outcomes."""
    assert set(got) == set(expected), "one exported row per data row"
    wrong = {}
    for line, want in expected.items():
        outcome = got[line][0]
        if got[line] == want:
            continue
        if outcome in FINAL or outcome not in NOT_FINAL:
            wrong[line] = (got[line], want)
    assert not wrong, (
        f"{len(wrong)} final outcomes differ from the oracle, e.g. {list(wrong.items())[:5]}"
    )
    return Counter(o for o, _r in got.values())


def assert_oracle(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    wrong = {line: (got[line], want) for line, want in expected.items() if got[line] != want}
    assert not wrong, (
        f"{len(wrong)} outcomes differ from the oracle, e.g. {list(wrong.items())[:5]}"
    )


@dataclass
class Finish:
    """What a clean rerun after the faults are cleared must give."""

    code: int
    got: dict
    report: dict
    reconcile: dict
    calls: list[Call] = field(default_factory=list)


def finish_cleanly(simulator: Simulator, sessions, wave_files: WaveFiles, tmp_path: Path, config):
    """Clears the faults, reruns: exit 0, the oracle's outcomes, reconciliation ok."""
    simulator.set_faults({})
    since = simulator.mark()
    code = run_wave(wave_files.export, config)
    calls = simulator.calls(since)
    got = exported(sessions, tmp_path)
    rep = report(sessions)
    assert code == 0, rep["pending_by_partner"]
    assert_oracle(got, wave_files.expected)
    assert rep["outcomes"].get("PENDING", 0) == 0 and rep["status"] == "CLOSED"
    recon = reconcile_now()
    assert recon["ok"], recon
    credited = sum(1 for o, _r in got.values() if o == "CREDITED")
    assert recon["ledger_count"] == recon["statement_count"] == credited > 0
    return Finish(code, got, rep, recon, calls)


# ------------------------------------------------------------------ what was already answered
@pytest.fixture(autouse=True)
def _no_flow_heartbeats():
    """Prefect joins each flow run's heartbeat thread on exit, up to a second per subflow;
    heartbeats only detect crashed runs, which these tests do not need."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@dataclass
class Answered:
    """Which partner answers the database already holds (taken between two runs)."""

    identity: set[int]
    screening: dict[int, dict[str, bool]]
    account: set[int]
    credits_settled: set[str]
    messages_sent: set[str]


def answered(sessions) -> Answered:
    import json

    from sqlalchemy import select

    from models.tables import LedgerEntry, Message, Registrant

    with sessions() as session:
        rows = session.execute(
            select(
                Registrant.id,
                Registrant.identity_answer,
                Registrant.screening_answers,
                Registrant.account_status,
            ).where(Registrant.wave_id == 1)
        ).all()
        credits = session.execute(
            select(LedgerEntry.idempotency_key).where(LedgerEntry.status != "PENDING")
        ).scalars()
        sent = session.execute(
            select(Message.idempotency_key).where(Message.status != "QUEUED")
        ).scalars()
        return Answered(
            identity={r.id for r in rows if r.identity_answer is not None},
            screening={r.id: json.loads(r.screening_answers or "{}") for r in rows},
            account={r.id for r in rows if r.account_status is not None},
            credits_settled=set(credits),
            messages_sent=set(sent),
        )


def sent_keys(call: Call) -> list[str]:
    """The item keys a batch call carried (refs or idempotency keys); [] for a GET."""
    import json

    try:
        body = json.loads(call.request) if call.request else {}
    except ValueError:
        return []
    for list_key, key in (
        ("records", "ref"),
        ("credits", "idempotency_key"),
        ("messages", "idempotency_key"),
    ):
        if isinstance(body, dict) and isinstance(body.get(list_key), list):
            return [item[key] for item in body[list_key]]
    return []


def assert_nothing_asked_twice(before: Answered, calls: list[Call]) -> Counter:
    """No call after `before` asks a partner about work whose answer was already stored.

    Returns the count of items sent per partner kind.
    """
    sent: Counter = Counter()
    repeated: list[tuple[str, str]] = []
    for call in calls:
        keys = sent_keys(call)
        sent[call.kind] += len(keys)
        for key in keys:
            if call.kind == "registry" and int(key) in before.identity:
                repeated.append((call.partner, key))
            elif call.kind == "agency" and call.partner in before.screening.get(int(key), {}):
                repeated.append((call.partner, key))
            elif call.kind == "payment" and int(key) in before.account:
                repeated.append((call.partner, key))
            elif call.kind == "card-issuer" and key in before.credits_settled:
                repeated.append((call.partner, "credit"))
            elif call.kind == "notifier" and key in before.messages_sent:
                repeated.append((call.partner, "message"))
    assert not repeated, f"{len(repeated)} items asked again, e.g. {repeated[:5]}"
    return sent
