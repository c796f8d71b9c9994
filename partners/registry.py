"""The population registry: does a NIK exist, is its holder alive, do name, birth and KK match."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from partners.client import PartnerClient, PartnerFailure, is_int

VERIFY_PATH = "/v1/identity/verify"
_FIELDS = ("ref", "nik", "full_name", "birth_date", "kk_number")


@dataclass(frozen=True)
class IdentityAnswer:
    found: bool
    deceased: bool
    name_score: int | None
    birth_date_match: bool
    kk_match: bool


NOT_FOUND = IdentityAnswer(
    found=False, deceased=False, name_score=None, birth_date_match=False, kk_match=False
)


class RegistryClient(PartnerClient):
    def verify(self, records: Sequence[dict]) -> dict[str, IdentityAnswer | PartnerFailure]:
        """Asks about records of ref, nik, full_name, birth_date (YYYY-MM-DD) and kk_number."""
        payload = [_record(r) for r in records]
        return self.post_items(
            VERIFY_PATH, "records", payload, key_field="ref", parse=parse_identity
        )


def _record(record: dict) -> dict:
    sent = {name: record[name] for name in _FIELDS}
    if isinstance(sent["birth_date"], date):
        sent["birth_date"] = sent["birth_date"].isoformat()
    return sent


def parse_identity(result: dict) -> IdentityAnswer | None:
    """One registry result, or None when it cannot be read."""
    found = result.get("found")
    if not isinstance(found, bool):
        return None
    if not found:
        return NOT_FOUND
    deceased = result.get("deceased")
    score = result.get("name_score")
    birth_date_match = result.get("birth_date_match")
    kk_match = result.get("kk_match")
    if not (
        isinstance(deceased, bool)
        and is_int(score)
        and 0 <= score <= 100
        and isinstance(birth_date_match, bool)
        and isinstance(kk_match, bool)
    ):
        return None
    return IdentityAnswer(True, deceased, score, birth_date_match, kk_match)
