"""The card issuer: credits training balances (idempotently), revokes them, looks credits and
revocations up, lists statements.

The statement pager and the key lookup here serve every partner with that shape of call
(the payment partners' disbursements too: partners/payment.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

from partners.client import PartnerClient, PartnerError, PartnerFailure, is_int

CREDITS_PATH = "/v1/credits"
REVOCATIONS_PATH = "/v1/revocations"
STATEMENTS_PATH = "/v1/statements"
CREDIT_STATUSES = frozenset({"APPLIED", "REJECTED", "CONFLICT"})
REVOCATION_STATUSES = frozenset({"REVOKED", "CARD_USED", "CONFLICT"})
REVOCATION_REASONS = frozenset({"NO_TRAINING_IN_TIME", "BLACKLISTED"})
_FIELDS = ("idempotency_key", "card_number", "nik", "amount", "currency", "reference")
_REVOCATION_FIELDS = ("idempotency_key", "card_number", "reason", "reference")

T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True)
class CreditResult:
    status: str
    transfer_id: str | None
    reason: str | None
    replayed: bool


@dataclass(frozen=True)
class RevocationResult:
    """REVOKED (the card is closed; `amount_returned` is what was left on it), CARD_USED
    (nothing changed) or CONFLICT (the key was used before with another body)."""

    status: str
    amount_returned: int | None
    reason: str | None
    replayed: bool


@dataclass(frozen=True)
class StatementEntry:
    transfer_id: str
    idempotency_key: str
    card_number: str
    amount: int


class IssuerClient(PartnerClient):
    def credit(self, credits: Sequence[dict]) -> dict[str, CreditResult | PartnerFailure]:
        """Sends credits of idempotency_key, card_number, nik, amount (int), currency, reference.

        A credit whose answer is lost is sent again under the same key, which the issuer
        applies at most once.
        """
        payload = []
        for number, credit in enumerate(credits, 1):
            if not is_int(credit["amount"]):
                raise ValueError(f"credit #{number}: amount must be an int of rupiah")
            payload.append({name: credit[name] for name in _FIELDS})
        return self.post_items(
            CREDITS_PATH, "credits", payload, key_field="idempotency_key", parse=parse_credit
        )

    def lookup(self, key: str) -> CreditResult | None | PartnerFailure:
        """The issuer's result for a key, None if it never received it."""
        return lookup_key(self, CREDITS_PATH, key, parse_credit)

    def revoke(self, revocations: Sequence[dict]) -> dict[str, RevocationResult | PartnerFailure]:
        """Sends revocations of idempotency_key, card_number, reason (one of
        REVOCATION_REASONS) and reference.

        A revocation whose answer is lost is sent again under the same key, which the
        issuer applies at most once.
        """
        payload = []
        for number, revocation in enumerate(revocations, 1):
            if revocation["reason"] not in REVOCATION_REASONS:
                raise ValueError(
                    f"revocation #{number}: reason must be one of {sorted(REVOCATION_REASONS)}"
                )
            payload.append({name: revocation[name] for name in _REVOCATION_FIELDS})
        return self.post_items(
            REVOCATIONS_PATH,
            "revocations",
            payload,
            key_field="idempotency_key",
            parse=parse_revocation,
        )

    def lookup_revocation(self, key: str) -> RevocationResult | None | PartnerFailure:
        """The issuer's revocation result for a key, None if it never received it."""
        return lookup_key(self, REVOCATIONS_PATH, key, parse_revocation)

    def statement(self, reference: str, page_size: int = 1000) -> Iterator[StatementEntry]:
        """Every entry of the statement for `reference`, page after page.

        Raises PartnerError when a page cannot be had after its retries.
        """
        return read_statement(self, reference, page_size, parse_statement_page)


def lookup_key(
    client: PartnerClient, path: str, key: str, parse: Callable[[dict], T | None]
) -> T | None | PartnerFailure:
    """GET `{path}/{key}`: the partner's result for an idempotency key read by `parse`,
    None on 404 (it never received the key), a PartnerFailure when no answer could be had."""

    def read(body: dict) -> T | None:
        if body.get("idempotency_key", key) != key:
            return None
        return parse(body)

    try:
        _, result = client._get(
            f"{path}/{quote(key, safe=':@')}",
            None,
            # Keys hold a NIK: logs name the route, not the key.
            label=f"{path}/{{idempotency_key}}",
            parse=read,
        )
    except PartnerError as exc:
        return exc.failure
    return result


def read_statement(
    client: PartnerClient,
    reference: str,
    page_size: int,
    parse_page: Callable[[dict], tuple[list[E], str | None] | None],
) -> Iterator[E]:
    """Every entry of `client`'s statement (GET /v1/statements) for `reference`, following
    the cursor page after page; `parse_page` reads a page as (entries, next cursor).

    Raises PartnerError when a page cannot be had after its retries, or when a cursor comes
    back that was seen before (it would page forever).
    """
    after: str | None = None
    seen: set[str] = set()
    while True:
        params: dict = {"reference": reference, "limit": page_size}
        if after is not None:
            params["after"] = after
        status, page = client._get(STATEMENTS_PATH, params, label=STATEMENTS_PATH, parse=parse_page)
        if page is None:
            raise PartnerError(
                PartnerFailure(client.settings.id, f"HTTPStatus{status}", "no statement", True)
            )
        entries, after = page
        yield from entries
        if after is None:
            return
        if after in seen:
            raise PartnerError(
                PartnerFailure(
                    client.settings.id, "StatementCursorLoop", "statement cursor repeated", True
                )
            )
        seen.add(after)


def parse_credit(result: dict) -> CreditResult | None:
    """One credit result, or None when it cannot be read."""
    status = result.get("status")
    transfer_id = result.get("transfer_id")
    reason = result.get("reason")
    replayed = result.get("replayed", False)
    if status not in CREDIT_STATUSES or not isinstance(replayed, bool):
        return None
    if not (transfer_id is None or isinstance(transfer_id, str)):
        return None
    if not (reason is None or isinstance(reason, str)):
        return None
    if status == "APPLIED" and not transfer_id:
        return None
    return CreditResult(status, transfer_id, reason, replayed)


def parse_revocation(result: dict) -> RevocationResult | None:
    """One revocation result, or None when it cannot be read (a REVOKED one must say what
    was returned, as an int of rupiah of at least 0)."""
    status = result.get("status")
    amount = result.get("amount_returned")
    reason = result.get("reason")
    replayed = result.get("replayed", False)
    if status not in REVOCATION_STATUSES or not isinstance(replayed, bool):
        return None
    if not (amount is None or (is_int(amount) and amount >= 0)):
        return None
    if not (reason is None or isinstance(reason, str)):
        return None
    if status == "REVOKED" and amount is None:
        return None
    return RevocationResult(status, amount, reason, replayed)


def parse_statement_page(body: dict) -> tuple[list[StatementEntry], str | None] | None:
    """An issuer statement page as (entries, next cursor), or None when it cannot be read."""
    return statement_page(body, ("transfer_id", "idempotency_key", "card_number"), StatementEntry)


def statement_page(
    body: dict, texts: tuple[str, str, str], make: Callable[[str, str, str, int], E]
) -> tuple[list[E], str | None] | None:
    """A statement page as (entries, next cursor), or None when it cannot be read: each
    entry has the three non-empty strings named by `texts` and an int `amount`."""
    raw = body.get("entries")
    cursor = body.get("next")
    if not isinstance(raw, list) or not (cursor is None or isinstance(cursor, str)):
        return None
    entries = []
    for entry in raw:
        if not isinstance(entry, dict):
            return None
        values = [entry.get(name) for name in texts]
        amount = entry.get("amount")
        if not all(isinstance(v, str) and v for v in values) or not is_int(amount):
            return None
        entries.append(make(str(values[0]), str(values[1]), str(values[2]), amount))
    return entries, cursor or None
