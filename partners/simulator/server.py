"""The partner simulator: one FastAPI app answering every partner route of partner-api.md."""

import asyncio
import hmac
import ipaddress
import math
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import requests
import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.responses import StreamingResponse

from partners.simulator.faults import (
    Decision,
    FaultDecider,
    FaultsConfig,
    FaultsError,
    PartnerFaults,
    faults_from_dict,
    load_faults,
)
from partners.simulator.lives import (
    LIFE_MODES,
    MAX_FEED_PAGE,
    check_scripted,
    parse_aware,
    wib_iso,
)
from partners.simulator.state import (
    REVOCATION_REASONS,
    CreditBody,
    DisbursementBody,
    RevocationBody,
    open_journal,
)
from partners.simulator.truth import (
    AGENCY_CATEGORIES,
    DISBURSEMENT_FAILURES,
    LAID_OFF_AGENCY,
    PAYMENT_PROVIDERS,
    TRAINING_PLATFORMS,
    person_truth,
)

REGISTRY = "registry"
CARD_ISSUER = "card-issuer"
NOTIFIER = "notifier"
MAX_STATEMENT_PAGE = 10_000
_TRANSPORT = "simulator.transport"
_JSON = "application/json"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The /_admin routes (faults, stats, the messages sent) answer a loopback client, or one
# that sends "Authorization: Bearer <token>" with the token this variable held at start.
ADMIN_TOKEN_ENV = "PRAKERJA_SIMULATOR_ADMIN_TOKEN"
ADMIN_TOKEN_MIN_CHARS = 16

Answer = Callable[[], list[dict[str, Any]]]


class BadRequest(Exception):
    """The request body breaks the contract: answered 400."""


class _TokenBucket:
    """max_rps for one partner: a bucket of max(1, rps) tokens refilled at rps per second."""

    def __init__(self, rps: float) -> None:
        self.rps = rps
        self.capacity = max(1.0, rps)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> float:
        """0 if the call may go ahead, else the seconds until a token is free."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rps)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rps


def _nik_of_message(item: dict[str, Any]) -> str:
    # Messages carry no NIK in the contract; the program's keys embed it ("w1:<nik>:selected").
    nik = item.get("nik")
    if isinstance(nik, str):
        return nik
    for part in item["idempotency_key"].split(":"):
        if len(part) == 16 and part.isdigit():
            return part
    return str(item.get("to", ""))


def _parse_items(body: bytes, list_field: str, key_field: str, required: tuple[str, ...]) -> list:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(list_field), list):
        raise BadRequest(f"body must be an object with a {list_field!r} list")
    items = data[list_field]
    keys = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"{list_field}[{i}] is not an object")
        key = item.get(key_field)
        if not isinstance(key, str) or not key:
            raise BadRequest(f"{list_field}[{i}].{key_field} must be a non-empty string")
        if key in keys:
            raise BadRequest(f"{list_field}[{i}].{key_field} repeats {key!r}")
        keys.add(key)
        for name in required:
            if not isinstance(item.get(name), str):
                raise BadRequest(f"{list_field}[{i}].{name} must be a string")
    return items


class Simulator:
    """The partners' behaviour, stats and faults; the routes only hand requests to it."""

    def __init__(
        self,
        seed: str,
        faults: FaultsConfig | None,
        state_path: str | Path | None,
        providers: tuple[str, ...],
        lives: str = "seeded",
    ) -> None:
        self.seed = seed
        self.providers = frozenset(providers)
        self.state = open_journal(seed, state_path, lives)
        self.issuer, self.notifier = self.state.issuer, self.state.notifier
        self.payments, self.rechecks = self.state.payments, self.state.rechecks
        self.training, self.clock = self.state.training, self.state.clock
        self._journal = self.state.journal
        self.set_faults(faults or FaultsConfig())
        self.reset_stats()

    def set_faults(self, faults: FaultsConfig) -> None:
        # A new configuration starts its fault sequence (and rate limits) afresh.
        self.faults = faults
        self.decider = FaultDecider(faults)
        self._buckets: dict[str, _TokenBucket] = {}

    def reset_stats(self) -> None:
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.items: defaultdict[str, int] = defaultdict(int)
        # Per partner: calls admitted past the rate limit and faults, and the wall-clock
        # span from the first to the last (what a benchmark divides by to get calls/s).
        self.admitted: dict[str, list] = {}

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "items": dict(self.items),
            "admitted": {
                k: {"calls": n, "first": a, "last": b} for k, (n, a, b) in self.admitted.items()
            },
            "credits_applied": self.issuer.applied,
            "messages_accepted": self.notifier.accepted,
            "messages_duplicate_keys": self.notifier.duplicate_keys,
            "cards_revoked": self.issuer.revoked,
            "disbursements_completed": self.payments.completed,
            "disbursements_failed": self.payments.failed,
            "training": self.training.stats(),
        }

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()

    async def guard(
        self, request: Request, partner: str, body: bytes, *, effects: bool = False
    ) -> tuple[Response | None, PartnerFaults, Decision | None]:
        """The checks every call goes through before its items are looked at; `effects`:
        the call changes state (it may then take effect and lose its answer)."""
        self.calls[partner] += 1
        faults = self.faults.for_partner(partner)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.down:
            return _error(503, "partner down"), faults, None
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or (faults.api_key and key != faults.api_key):
            return _error(401, "credentials refused"), faults, None
        if faults.draws:
            decision = self.decider.decide(partner, body, faults, effects=effects)
        else:
            decision = None
        return None, faults, decision

    async def request_fault(
        self, request: Request, partner: str, faults: PartnerFaults, decision: Decision | None
    ) -> Response | None:
        """Rate limiting and the request-level faults drawn for this call, if any."""
        if faults.max_rps:
            bucket = self._buckets.get(partner)
            if bucket is None or bucket.rps != faults.max_rps:
                bucket = self._buckets[partner] = _TokenBucket(faults.max_rps)
            wait = bucket.take()
            if wait:
                return _too_many(math.ceil(wait))
        if decision is None:
            return None
        fault = decision.request_fault
        if fault == "429":
            return _too_many(faults.retry_after_s)
        if fault == "5xx":
            return _error(decision.status_5xx, "injected server error")
        if fault == "drop":
            return await _drop(request)
        if fault == "timeout":
            await asyncio.sleep(faults.timeout_s)
        return None

    async def batch(
        self,
        request: Request,
        partner: str,
        list_field: str,
        key_field: str,
        required: tuple[str, ...],
        prepare: Callable[[list[dict[str, Any]]], Answer],
        unknown_status: dict[str, Any],
        *,
        effects: bool = False,
    ) -> Response:
        body = await request.body()
        refused, faults, decision = await self.guard(request, partner, body, effects=effects)
        if refused is not None:
            return refused
        try:
            items = _parse_items(body, list_field, key_field, required)
            if len(items) > faults.batch_size:
                return _error(413, f"at most {faults.batch_size} {list_field} per call")
            # Validate every item before acting: an invalid item refuses the whole call.
            answer = prepare(items)
        except BadRequest as exc:
            return _error(400, str(exc))
        faulted = await self.request_fault(request, partner, faults, decision)
        if faulted is not None:
            return faulted
        self.items[partner] += len(items)
        now = time.time()
        seen = self.admitted.setdefault(partner, [0, now, now])
        seen[0] += 1
        seen[2] = now
        results = answer()
        if decision is not None and decision.request_fault == "lost_answer":
            return _error(503, "injected: applied, answer lost")
        if decision is not None:
            results = _mangle(results, key_field, decision, unknown_status)
        return _json(orjson.dumps({"results": results}), decision)

    # --- answers per partner ---------------------------------------------------------

    def identity(self, items: list[dict[str, Any]]) -> Answer:
        return lambda: self._identity(items)

    def _identity(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seed = self.seed
        deceased = self.rechecks.deceased
        out = []
        for item in items:
            t = person_truth(seed, item["nik"])
            fate = t.registry_fate
            if deceased and item["nik"] in deceased:  # set by POST /_admin/registry/deceased
                out.append(
                    {
                        "ref": item["ref"],
                        "found": True,
                        "deceased": True,
                        "name_score": t.name_score,
                        "birth_date_match": fate != "BIRTH_DATE_MISMATCH",
                        "kk_match": fate != "KK_MISMATCH",
                    }
                )
            elif fate == "NIK_NOT_FOUND":
                out.append({"ref": item["ref"], "found": False})
            else:
                out.append(
                    {
                        "ref": item["ref"],
                        "found": True,
                        "deceased": fate == "DECEASED",
                        "name_score": t.name_score,
                        "birth_date_match": fate != "BIRTH_DATE_MISMATCH",
                        "kk_match": fate != "KK_MISMATCH",
                    }
                )
        return out

    def screening(self, agency_id: str) -> Callable[[list[dict[str, Any]]], Answer]:
        seed = self.seed
        cat = AGENCY_CATEGORIES.get(agency_id)
        listed = self.rechecks.listed

        def prepare(items: list[dict[str, Any]]) -> Answer:
            return lambda: answer(items)

        def answer(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            added = listed.get(agency_id)  # set by POST /_admin/agencies/<id>/list
            if added:
                results = truth(items)
                for i, result in zip(items, results, strict=True):
                    result["listed"] = result["listed"] or i["nik"] in added
                return results
            return truth(items)

        def truth(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if agency_id == LAID_OFF_AGENCY:
                return [
                    {"ref": i["ref"], "listed": person_truth(seed, i["nik"]).laid_off}
                    for i in items
                ]
            if cat is None:
                return [{"ref": i["ref"], "listed": False} for i in items]
            return [
                {"ref": i["ref"], "listed": person_truth(seed, i["nik"]).excluded_category == cat}
                for i in items
            ]

        return prepare

    def accounts(self, provider_id: str) -> Callable[[list[dict[str, Any]]], Answer]:
        seed = self.seed
        known = provider_id in self.providers

        def prepare(items: list[dict[str, Any]]) -> Answer:
            return lambda: answer(items)

        def answer(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not known:
                return [{"ref": i["ref"], "status": "NOT_FOUND"} for i in items]
            return [
                {"ref": i["ref"], "status": person_truth(seed, i["nik"]).account_status}
                for i in items
            ]

        return prepare

    def credits(self, items: list[dict[str, Any]]) -> Answer:
        batch: list[tuple[str, CreditBody]] = []
        for i, item in enumerate(items):
            amount = item.get("amount")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
                raise BadRequest(f"credits[{i}].amount must be a positive integer")
            body = (
                item["card_number"],
                item["nik"],
                amount,
                item["currency"],
                item["reference"],
            )
            batch.append((item["idempotency_key"], body))
        return lambda: self.issuer.apply(batch)

    def revocations(self, items: list[dict[str, Any]]) -> Answer:
        batch: list[tuple[str, RevocationBody]] = []
        for i, item in enumerate(items):
            if item["reason"] not in REVOCATION_REASONS:
                raise BadRequest(f"revocations[{i}].reason must be one of {REVOCATION_REASONS}")
            body = (item["card_number"], item["reason"], item["reference"])
            batch.append((item["idempotency_key"], body))
        return lambda: self.issuer.revoke(batch)

    def disbursements(self, provider_id: str) -> Callable[[list[dict[str, Any]]], Answer]:
        def prepare(items: list[dict[str, Any]]) -> Answer:
            batch: list[tuple[str, DisbursementBody]] = []
            for i, item in enumerate(items):
                amount = item.get("amount")
                if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
                    raise BadRequest(f"disbursements[{i}].amount must be a positive integer")
                body = (
                    item["account"],
                    item["nik"],
                    amount,
                    item["currency"],
                    item["reference"],
                )
                batch.append((item["idempotency_key"], body))
            return lambda: self.payments.disburse(provider_id, batch)

        return prepare

    def messages(self, items: list[dict[str, Any]]) -> Answer:
        batch = [(m["idempotency_key"], _nik_of_message(m)) for m in items]
        return lambda: self.notifier.send(batch, items)


def _page_params(request: Request, max_limit: int) -> tuple[str | None, int] | Response:
    """The `after` cursor and `limit` of a paged GET, or its 400 answer."""
    params = request.query_params
    try:
        limit = int(params.get("limit") or 1000)
    except ValueError:
        return _error(400, "limit must be an integer")
    if not 1 <= limit <= max_limit:
        return _error(400, f"limit is 1..{max_limit}")
    return params.get("after") or None, limit


def _ok(data: Any = None) -> Response:
    return Response(orjson.dumps({"ok": True} if data is None else data), media_type=_JSON)


async def _admin_body(request: Request) -> dict[str, Any]:
    """The JSON object of an admin POST; BadRequest otherwise."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _text_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=_JSON)


def _too_many(retry_after_s: int) -> Response:
    response = _error(429, "rate limited")
    response.headers["Retry-After"] = str(max(1, retry_after_s))
    return response


def _json(content: bytes, decision: Decision | None) -> Response:
    if decision is not None and decision.body_fault == "bad_json":
        content = b"<html><body>upstream error</body></html>"
    elif decision is not None and decision.body_fault == "truncated_json":
        content = content[: len(content) // 2]
    return Response(content, media_type=_JSON)


async def _drop(request: Request) -> Response:
    """Close the connection without an answer (the client sees the peer disconnect)."""
    transport = request.scope.get(_TRANSPORT)
    if transport is not None:
        transport.close()
        # Let uvicorn notice the disconnect; whatever is sent next is discarded.
        await asyncio.sleep(0)
        return Response(status_code=500)

    # Not under uvicorn: start an answer and break it, which closes the connection mid-body.
    async def broken() -> Any:
        yield b'{"results": ['
        raise ConnectionAbortedError("injected dropped connection")

    return StreamingResponse(broken(), media_type=_JSON)


def _mangle(
    results: list[dict[str, Any]],
    key_field: str,
    decision: Decision,
    unknown_status: dict[str, Any],
) -> list[dict[str, Any]]:
    if decision.faults.item_draws:
        mangled = []
        for result in results:
            fault = decision.item_fault(result[key_field])
            if fault == "missing_result":
                continue
            if fault == "unknown_status":
                result = {key_field: result[key_field], **unknown_status}
            mangled.append(result)
            if fault == "duplicate_result":
                mangled.append(dict(result))
        results = mangled
    if decision.unknown_key:
        template = results[0] if results else {}
        results = [*results, {**template, key_field: "unknown-" + decision.salt[:6].hex()}]
    return results


def admin_token_from_env(env: Any = None) -> str | None:
    """The admin token of PRAKERJA_SIMULATOR_ADMIN_TOKEN in `env` (a test's), None when
    unset; ValueError when it is too short to be one."""
    from models.config import read_settings

    return admin_token(read_settings(env).simulator_admin_token)


def admin_token(secret: Any) -> str | None:
    """The admin token of the settings' simulator_admin_token (read once at start-up),
    None when unset; ValueError when it is too short to be one."""
    token = secret.get_secret_value() if secret else None
    if token is not None and len(token) < ADMIN_TOKEN_MIN_CHARS:
        raise ValueError(f"{ADMIN_TOKEN_ENV}: at least {ADMIN_TOKEN_MIN_CHARS} characters")
    return token


def _loopback_client(scope: Any) -> bool:
    client = scope.get("client")
    if not client:
        return False  # unknown peer (e.g. a Unix socket behind a proxy): not trusted
    try:
        address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _admin_allowed(scope: Any, token: bytes | None) -> bool:
    if _loopback_client(scope):
        return True
    if not token:
        return False
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
    return False


class _SimulatorApp(FastAPI):
    """FastAPI plus what every answer needs: the X-Request-Id echo, access to the
    connection's transport so a 'drop' fault can close it without answering, and the
    gate of the /_admin routes (loopback, or the admin token)."""

    admin_token: bytes | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if scope["path"].lstrip("/").startswith("_admin") and not _admin_allowed(
            scope, self.admin_token
        ):
            refused = _error(403, "admin routes answer on loopback, or with the admin token")
            await refused(scope, receive, send)
            return
        # uvicorn hands the app its RequestResponseCycle.send, whose owner holds the transport.
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is not None:
            scope[_TRANSPORT] = transport
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
                break
        if request_id is None:
            await super().__call__(scope, receive, send)
            return

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await super().__call__(scope, receive, send_with_id)


def create_app(
    seed: str,
    faults: FaultsConfig | None = None,
    state_path: str | Path | None = None,
    *,
    providers: tuple[str, ...] = PAYMENT_PROVIDERS,
    admin_token: str | None = None,
    lives: str = "seeded",
) -> FastAPI:
    """The simulator app; partners answer from person_truth(seed, nik) and the faults config.

    `lives`: "seeded" (each credited card gets a life of training events drawn from the
    seed) or "none" (only the events scripted by POST /_admin/training/events).
    /_admin answers loopback clients, and others that send `Bearer <admin_token>`."""
    sim = Simulator(seed, faults, state_path, providers, lives)
    app = _SimulatorApp(title="partner simulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.admin_token = admin_token.encode() if admin_token else None
    app.state.simulator = sim

    @app.post("/registry/v1/identity/verify")
    async def verify_identity(request: Request) -> Response:
        return await sim.batch(
            request, REGISTRY, "records", "ref", ("nik",), sim.identity, {"found": "maybe"}
        )

    @app.post("/agency/{agency_id}/v1/screening/check")
    async def check_screening(request: Request, agency_id: str) -> Response:
        return await sim.batch(
            request,
            agency_id,
            "records",
            "ref",
            ("nik",),
            sim.screening(agency_id),
            {"listed": "maybe"},
        )

    @app.post("/payment/{provider_id}/v1/accounts/verify")
    async def verify_accounts(request: Request, provider_id: str) -> Response:
        return await sim.batch(
            request,
            provider_id,
            "records",
            "ref",
            ("nik", "account"),
            sim.accounts(provider_id),
            {"status": "WEIRD"},
        )

    @app.post("/issuer/v1/credits")
    async def apply_credits(request: Request) -> Response:
        return await sim.batch(
            request,
            CARD_ISSUER,
            "credits",
            "idempotency_key",
            ("card_number", "nik", "currency", "reference"),
            sim.credits,
            {"status": "WEIRD"},
            effects=True,
        )

    async def look_up(
        request: Request, partner_id: str, find: Callable[[], dict[str, Any] | None]
    ) -> Response:
        """GET <route>/{idempotency_key}: the key's original result, or 404 (credits,
        revocations, disbursements alike), behind the partner's guard and faults."""
        body = request.url.path.encode()
        refused, faults, decision = await sim.guard(request, partner_id, body)
        if refused is None:
            refused = await sim.request_fault(request, partner_id, faults, decision)
        if refused is not None:
            return refused
        result = find()
        if result is None:
            return _error(404, "unknown idempotency key")
        return _json(orjson.dumps(result), decision)

    @app.get("/issuer/v1/credits/{idempotency_key}")
    async def get_credit(request: Request, idempotency_key: str) -> Response:
        return await look_up(request, CARD_ISSUER, lambda: sim.issuer.result(idempotency_key))

    @app.get("/issuer/v1/statements")
    async def get_statement(request: Request) -> Response:
        body = str(request.url.path + "?" + request.url.query).encode()
        refused, faults, decision = await sim.guard(request, CARD_ISSUER, body)
        if refused is not None:
            return refused
        params = request.query_params
        reference = params.get("reference")
        try:
            start = int(params.get("after") or 0)
            limit = int(params.get("limit") or 1000)
        except ValueError:
            return _error(400, "after and limit must be cursors/integers")
        if not reference or start < 0 or not 1 <= limit <= MAX_STATEMENT_PAGE:
            return _error(400, f"reference is required; limit is 1..{MAX_STATEMENT_PAGE}")
        refused = await sim.request_fault(request, CARD_ISSUER, faults, decision)
        if refused is not None:
            return refused
        entries, after = sim.issuer.statement(reference, start, limit)
        page = {"entries": entries, "next": None if after is None else str(after)}
        return _json(orjson.dumps(page), decision)

    @app.post("/issuer/v1/revocations")
    async def revoke_cards(request: Request) -> Response:
        return await sim.batch(
            request,
            CARD_ISSUER,
            "revocations",
            "idempotency_key",
            ("card_number", "reason", "reference"),
            sim.revocations,
            {"status": "WEIRD"},
            effects=True,
        )

    @app.get("/issuer/v1/revocations/{idempotency_key}")
    async def get_revocation(request: Request, idempotency_key: str) -> Response:
        return await look_up(request, CARD_ISSUER, lambda: sim.issuer.revocation(idempotency_key))

    @app.get("/training/{platform_id}/v1/events")
    async def get_events(request: Request, platform_id: str) -> Response:
        if platform_id not in TRAINING_PLATFORMS:
            return _error(404, f"no training platform {platform_id!r}")
        body = str(request.url.path + "?" + request.url.query).encode()
        refused, faults, decision = await sim.guard(request, platform_id, body)
        if refused is not None:
            return refused
        params = _page_params(request, MAX_FEED_PAGE)
        if isinstance(params, Response):
            return params
        after, limit = params
        refused = await sim.request_fault(request, platform_id, faults, decision)
        if refused is not None:
            return refused
        try:
            # On a helper thread: the first read after a big move of the clock delivers
            # every event it passed (seconds for millions), and the other partners keep
            # answering meanwhile.
            page = await asyncio.to_thread(
                sim.training.page, TRAINING_PLATFORMS.index(platform_id), after, limit
            )
        except ValueError as exc:
            return _error(400, str(exc))
        sim.items[platform_id] += len(page["events"])
        return _json(orjson.dumps(page), decision)

    @app.post("/payment/{provider_id}/v1/disbursements")
    async def disburse(request: Request, provider_id: str) -> Response:
        if provider_id not in sim.providers:
            return _error(404, f"no payment partner {provider_id!r}")
        return await sim.batch(
            request,
            provider_id,
            "disbursements",
            "idempotency_key",
            ("account", "nik", "currency", "reference"),
            sim.disbursements(provider_id),
            {"status": "WEIRD"},
            effects=True,
        )

    @app.get("/payment/{provider_id}/v1/disbursements/{idempotency_key}")
    async def get_disbursement(
        request: Request, provider_id: str, idempotency_key: str
    ) -> Response:
        if provider_id not in sim.providers:
            return _error(404, f"no payment partner {provider_id!r}")
        return await look_up(
            request, provider_id, lambda: sim.payments.result(provider_id, idempotency_key)
        )

    @app.get("/payment/{provider_id}/v1/statements")
    async def get_payment_statement(request: Request, provider_id: str) -> Response:
        if provider_id not in sim.providers:
            return _error(404, f"no payment partner {provider_id!r}")
        body = str(request.url.path + "?" + request.url.query).encode()
        refused, faults, decision = await sim.guard(request, provider_id, body)
        if refused is not None:
            return refused
        params = request.query_params
        reference = params.get("reference")
        try:
            start = int(params.get("after") or 0)
            limit = int(params.get("limit") or 1000)
        except ValueError:
            return _error(400, "after and limit must be cursors/integers")
        if not reference or start < 0 or not 1 <= limit <= MAX_STATEMENT_PAGE:
            return _error(400, f"reference is required; limit is 1..{MAX_STATEMENT_PAGE}")
        refused = await sim.request_fault(request, provider_id, faults, decision)
        if refused is not None:
            return refused
        entries, after = sim.payments.statement(provider_id, reference, start, limit)
        page = {"entries": entries, "next": None if after is None else str(after)}
        return _json(orjson.dumps(page), decision)

    @app.post("/notify/v1/messages")
    async def send_messages(request: Request) -> Response:
        return await sim.batch(
            request,
            NOTIFIER,
            "messages",
            "idempotency_key",
            ("to", "template"),
            sim.messages,
            {"status": "WEIRD"},
        )

    @app.get("/_admin/stats")
    async def admin_stats() -> Response:
        return Response(orjson.dumps(sim.stats()), media_type=_JSON)

    @app.get("/_admin/messages")
    async def admin_messages(request: Request) -> Response:
        # What the gateway was sent, newest last: a sign-in code for a test or the demo.
        params = request.query_params
        try:
            after = int(params.get("after") or 0)
            last = int(params.get("last") or 100)
        except ValueError:
            return _error(400, "after and last must be integers")
        found = sim.notifier.find(
            template=params.get("template"), to=params.get("to"), after=after, last=last
        )
        return Response(orjson.dumps({"messages": found}), media_type=_JSON)

    @app.post("/_admin/faults")
    async def admin_faults(request: Request) -> Response:
        try:
            sim.set_faults(faults_from_dict(orjson.loads(await request.body())))
        except (orjson.JSONDecodeError, FaultsError) as exc:
            return _error(400, str(exc))
        return Response(orjson.dumps({"ok": True}), media_type=_JSON)

    @app.post("/_admin/reset-stats")
    async def admin_reset_stats() -> Response:
        sim.reset_stats()
        return Response(orjson.dumps({"ok": True}), media_type=_JSON)

    @app.get("/_admin/clock")
    async def admin_get_clock() -> Response:
        return _ok({"now": wib_iso(sim.clock.now())})

    @app.post("/_admin/clock")
    async def admin_set_clock(request: Request) -> Response:
        try:
            data = await _admin_body(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        at = parse_aware(data.get("now"))
        if at is None:
            return _error(400, "now must be an ISO 8601 time with an offset")
        sim.state.set_clock(at)
        return _ok({"now": wib_iso(sim.clock.now())})

    @app.post("/_admin/lives")
    async def admin_lives(request: Request) -> Response:
        try:
            data = await _admin_body(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        mode = data.get("mode")
        if mode not in LIFE_MODES:
            return _error(400, f"mode must be one of {LIFE_MODES}")
        sim.training.lives = mode
        return _ok({"mode": mode})

    @app.post("/_admin/training/events")
    async def admin_training_events(request: Request) -> Response:
        try:
            data = await _admin_body(request)
            platform = data.get("platform")
            if platform not in TRAINING_PLATFORMS:
                raise BadRequest(f"platform must be one of {TRAINING_PLATFORMS}")
            events = check_scripted(data.get("events"))
        except (BadRequest, ValueError) as exc:
            return _error(400, str(exc))
        sim.state.script_events(TRAINING_PLATFORMS.index(platform), events)
        return _ok({"ok": True, "events": len(events)})

    @app.post("/_admin/issuer/card-used")
    async def admin_card_used(request: Request) -> Response:
        try:
            card = _text_field(await _admin_body(request), "card_number")
        except BadRequest as exc:
            return _error(400, str(exc))
        sim.state.set_card_used(card)
        return _ok()

    @app.get("/_admin/issuer/revocations")
    async def admin_revocations() -> Response:
        return _ok({"revocations": sim.issuer.revocations()})

    @app.post("/_admin/payment/{provider_id}/fail")
    async def admin_payment_fail(request: Request, provider_id: str) -> Response:
        try:
            data = await _admin_body(request)
            account = _text_field(data, "account")
            reason = data.get("reason")
            if reason not in DISBURSEMENT_FAILURES:
                raise BadRequest(f"reason must be one of {DISBURSEMENT_FAILURES}")
        except BadRequest as exc:
            return _error(400, str(exc))
        sim.payments.set_failing(provider_id, account, reason)
        return _ok()

    @app.get("/_admin/payment/{provider_id}/disbursements")
    async def admin_disbursements(provider_id: str) -> Response:
        return _ok({"disbursements": sim.payments.listing(provider_id)})

    @app.post("/_admin/agencies/{agency_id}/list")
    async def admin_agency_list(request: Request, agency_id: str) -> Response:
        try:
            nik = _text_field(await _admin_body(request), "nik")
        except BadRequest as exc:
            return _error(400, str(exc))
        sim.rechecks.list_nik(agency_id, nik)
        return _ok()

    @app.post("/_admin/registry/deceased")
    async def admin_deceased(request: Request) -> Response:
        try:
            nik = _text_field(await _admin_body(request), "nik")
        except BadRequest as exc:
            return _error(400, str(exc))
        sim.rechecks.set_deceased(nik)
        return _ok()

    app.router.on_shutdown.append(sim.close)
    return app


class CannotListen(OSError):
    """The simulator's address cannot be bound (a busy port, an address not of this host);
    the message names host:port and the reason, in one line."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port (connections wait in its backlog until the
    server runs), or CannotListen."""
    shown = f"[{host}]" if ":" in host else host
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise CannotListen(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CannotListen(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def serve(
    host: str,
    port: int,
    seed: str,
    faults_path: str | None,
    *,
    state_path: str | None = None,
    admin_token: str | None = None,
    on_listening: Callable[[int], None] | None = None,
    lives: str = "seeded",
) -> None:
    """Run the simulator until interrupted (uvicorn, warnings only, no access log).

    The port is bound first (CannotListen if it cannot be); `on_listening(port)` then runs
    with the listening port (the one the OS chose for port 0), before any request is served."""
    faults = load_faults(faults_path) if faults_path else None
    sock = listen_socket(host, port)
    config = uvicorn.Config(
        create_app(seed, faults, state_path, admin_token=admin_token, lives=lives),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # Calls held by a timeout fault must not hold a shutdown for their whole sleep.
        timeout_graceful_shutdown=2,
    )
    if on_listening is not None:
        on_listening(int(sock.getsockname()[1]))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SimulatorThread:
    """The simulator on a daemon thread of this process, for tests: `with SimulatorThread(...)`."""

    def __init__(
        self,
        seed: str,
        faults: FaultsConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state_path: str | Path | None = None,
        lives: str = "seeded",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.app = create_app(seed, faults, state_path, lives=lives)
        self.simulator: Simulator = self.app.state.simulator
        config = uvicorn.Config(
            self.app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="simulator")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SimulatorThread":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start on {self.base_url}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.simulator.close()

    def __enter__(self) -> "SimulatorThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimulatorProcess:
    """The simulator as a child process (`python -m partners.simulator`), for end-to-end runs."""

    def __init__(
        self,
        seed: str,
        faults_path: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state_path: str | Path | None = None,
        startup_timeout_s: float = 20.0,
        lives: str = "seeded",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.args = [sys.executable, "-m", "partners.simulator"]
        self.args += ["--host", host, "--port", str(self.port), "--seed", seed]
        if faults_path is not None:
            self.args += ["--faults", str(faults_path)]
        if state_path is not None:
            self.args += ["--state", str(state_path)]
        if lives != "seeded":
            self.args += ["--lives", lives]
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SimulatorProcess":
        self.process = subprocess.Popen(self.args, cwd=_PROJECT_ROOT)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the simulator exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.base_url}/_admin/stats", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulator did not answer on {self.base_url}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
