"""The card issuer: credits training balances (idempotently), looks credits up, lists statements."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from partners.client import PartnerClient, PartnerError, PartnerFailure, is_int

CREDITS_PATH = "/v1/credits"
STATEMENTS_PATH = "/v1/statements"
CREDIT_STATUSES = frozenset({"APPLIED", "REJECTED", "CONFLICT"})
_FIELDS = ("idempotency_key", "card_number", "nik", "amount", "currency", "reference")


@dataclass(frozen=True)
class CreditResult:
    status: str
    transfer_id: str | None
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

        def parse(body: dict) -> CreditResult | None:
            if body.get("idempotency_key", key) != key:
                return None
            return parse_credit(body)

        try:
            _, result = self._get(
                f"{CREDITS_PATH}/{quote(key, safe=':@')}",
                None,
                # Keys hold a NIK: logs name the route, not the key.
                label=f"{CREDITS_PATH}/{{idempotency_key}}",
                parse=parse,
            )
        except PartnerError as exc:
            return exc.failure
        return result

    def statement(self, reference: str, page_size: int = 1000) -> Iterator[StatementEntry]:
        """Every entry of the statement for `reference`, page after page.

        Raises PartnerError when a page cannot be had after its retries.
        """
        after: str | None = None
        seen: set[str] = set()
        while True:
            params: dict = {"reference": reference, "limit": page_size}
            if after is not None:
                params["after"] = after
            status, page = self._get(
                STATEMENTS_PATH, params, label=STATEMENTS_PATH, parse=parse_statement_page
            )
            if page is None:
                raise PartnerError(
                    PartnerFailure(self.settings.id, f"HTTPStatus{status}", "no statement", True)
                )
            entries, after = page
            yield from entries
            if after is None:
                return
            if after in seen:
                # A cursor seen before would page forever.
                raise PartnerError(
                    PartnerFailure(
                        self.settings.id, "StatementCursorLoop", "statement cursor repeated", True
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


def parse_statement_page(body: dict) -> tuple[list[StatementEntry], str | None] | None:
    """A statement page as (entries, next cursor), or None when it cannot be read."""
    raw = body.get("entries")
    cursor = body.get("next")
    if not isinstance(raw, list) or not (cursor is None or isinstance(cursor, str)):
        return None
    entries = []
    for entry in raw:
        if not isinstance(entry, dict):
            return None
        transfer_id = entry.get("transfer_id")
        key = entry.get("idempotency_key")
        card_number = entry.get("card_number")
        amount = entry.get("amount")
        texts = (transfer_id, key, card_number)
        if not all(isinstance(t, str) and t for t in texts) or not is_int(amount):
            return None
        entries.append(StatementEntry(str(transfer_id), str(key), str(card_number), amount))
    return entries, cursor or None
