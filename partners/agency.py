"""A ministry or agency: is a NIK on its list (what that means is the program's configuration)."""

from __future__ import annotations

from collections.abc import Sequence

from partners.client import PartnerClient, PartnerFailure
from partners.config import AgencySettings

CHECK_PATH = "/v1/screening/check"
_FIELDS = {"ref", "nik"}


class AgencyClient(PartnerClient):
    settings: AgencySettings

    def check(self, records: Sequence[dict]) -> dict[str, bool | PartnerFailure]:
        """Asks about records of ref and nik; True means listed. A record of exactly those
        two fields is sent as it is (screening's, reused for every agency); any other is
        cut down to them, so that nothing more about a person leaves."""
        payload = [
            r if r.keys() == _FIELDS else {"ref": r["ref"], "nik": r["nik"]} for r in records
        ]
        return self.post_items(CHECK_PATH, "records", payload, key_field="ref", parse=parse_listed)


def parse_listed(result: dict) -> bool | None:
    listed = result.get("listed")
    return listed if isinstance(listed, bool) else None
