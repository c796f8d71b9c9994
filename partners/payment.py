"""A payment partner (bank or e-wallet): does a payout account exist and belong to this NIK;
pays incentives into it (idempotently), looks payments up, lists statements."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from partners.client import PartnerClient, PartnerFailure, is_int
from partners.issuer import lookup_key, read_statement, statement_page

VERIFY_PATH = "/v1/accounts/verify"
DISBURSEMENTS_PATH = "/v1/disbursements"
ACCOUNT_STATUSES = frozenset({"VERIFIED", "NOT_FOUND", "NIK_MISMATCH", "NOT_KYC", "BLOCKED"})
DISBURSEMENT_STATUSES = frozenset({"COMPLETED", "FAILED", "CONFLICT"})
# The reasons partner-api.md gives a FAILED disbursement; any other text is kept as said.
DISBURSEMENT_FAILURE_REASONS = frozenset({"ACCOUNT_CLOSED", "ACCOUNT_BLOCKED", "LIMIT_EXCEEDED"})
_FIELDS = ("ref", "account", "nik", "phone")
_DISBURSEMENT_FIELDS = ("idempotency_key", "account", "nik", "amount", "currency", "reference")


@dataclass(frozen=True)
class DisbursementResult:
    """COMPLETED (the money is in the account; `transfer_id` says which transfer), FAILED
    (with `reason`; the money did not move) or CONFLICT (the key was used before with
    another account, NIK or amount)."""

    status: str
    transfer_id: str | None
    reason: str | None
    replayed: bool


@dataclass(frozen=True)
class PaymentStatementEntry:
    transfer_id: str
    idempotency_key: str
    account: str
    amount: int


class PaymentClient(PartnerClient):
    def verify(self, records: Sequence[dict]) -> dict[str, str | PartnerFailure]:
        """Asks about records of ref, account, nik and phone; answers one of ACCOUNT_STATUSES."""
        payload = [{name: r[name] for name in _FIELDS} for r in records]
        return self.post_items(
            VERIFY_PATH, "records", payload, key_field="ref", parse=parse_account_status
        )

    def disburse(self, items: Sequence[dict]) -> dict[str, DisbursementResult | PartnerFailure]:
        """Pays items of idempotency_key, account, nik, amount (int), currency, reference.

        A key is paid at most once. An item whose answer is lost must be looked up
        (lookup_disbursement) before it is sent again, and always under the same key.
        """
        payload = []
        for number, item in enumerate(items, 1):
            if not is_int(item["amount"]):
                raise ValueError(f"disbursement #{number}: amount must be an int of rupiah")
            payload.append({name: item[name] for name in _DISBURSEMENT_FIELDS})
        return self.post_items(
            DISBURSEMENTS_PATH,
            "disbursements",
            payload,
            key_field="idempotency_key",
            parse=parse_disbursement,
        )

    def lookup_disbursement(self, key: str) -> DisbursementResult | None | PartnerFailure:
        """The partner's result for a disbursement key, None if it never received it."""
        return lookup_key(self, DISBURSEMENTS_PATH, key, parse_disbursement)

    def statement(self, reference: str, page_size: int = 1000) -> Iterator[PaymentStatementEntry]:
        """Every entry of the statement for `reference`, page after page.

        Raises PartnerError when a page cannot be had after its retries.
        """
        return read_statement(self, reference, page_size, parse_payment_statement_page)


def parse_account_status(result: dict) -> str | None:
    status = result.get("status")
    return status if status in ACCOUNT_STATUSES else None


def parse_disbursement(result: dict) -> DisbursementResult | None:
    """One disbursement result, or None when it cannot be read."""
    status = result.get("status")
    transfer_id = result.get("transfer_id")
    reason = result.get("reason")
    replayed = result.get("replayed", False)
    if status not in DISBURSEMENT_STATUSES or not isinstance(replayed, bool):
        return None
    if not (transfer_id is None or isinstance(transfer_id, str)):
        return None
    if not (reason is None or isinstance(reason, str)):
        return None
    if status == "COMPLETED" and not transfer_id:
        return None
    return DisbursementResult(status, transfer_id, reason, replayed)


def parse_payment_statement_page(
    body: dict,
) -> tuple[list[PaymentStatementEntry], str | None] | None:
    """A payment statement page as (entries, next cursor), or None when it cannot be read."""
    return statement_page(
        body, ("transfer_id", "idempotency_key", "account"), PaymentStatementEntry
    )
