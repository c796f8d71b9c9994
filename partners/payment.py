"""A payment partner (bank or e-wallet): does a payout account exist and belong to this NIK."""

from __future__ import annotations

from collections.abc import Sequence

from partners.client import PartnerClient, PartnerFailure

VERIFY_PATH = "/v1/accounts/verify"
ACCOUNT_STATUSES = frozenset({"VERIFIED", "NOT_FOUND", "NIK_MISMATCH", "NOT_KYC", "BLOCKED"})
_FIELDS = ("ref", "account", "nik", "phone")


class PaymentClient(PartnerClient):
    def verify(self, records: Sequence[dict]) -> dict[str, str | PartnerFailure]:
        """Asks about records of ref, account, nik and phone; answers one of ACCOUNT_STATUSES."""
        payload = [{name: r[name] for name in _FIELDS} for r in records]
        return self.post_items(
            VERIFY_PATH, "records", payload, key_field="ref", parse=parse_account_status
        )


def parse_account_status(result: dict) -> str | None:
    status = result.get("status")
    return status if status in ACCOUNT_STATUSES else None
