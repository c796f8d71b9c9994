"""What a batch task returns: counts and partner failures, never people."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from partners.client import PartnerFailure


@dataclass
class BatchReport:
    stage: str
    counts: Counter = field(default_factory=Counter)
    # (partner_id, error_class, needs_person) -> items left pending
    failures: Counter = field(default_factory=Counter)

    def fail(self, failure: PartnerFailure, items: int = 1) -> None:
        self.failures[(failure.partner_id, failure.error_class, failure.needs_person)] += items

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "counts": dict(self.counts),
            "failures": [
                {"partner": p, "error_class": e, "needs_person": n, "items": c}
                for (p, e, n), c in sorted(self.failures.items())
            ],
        }


def merge_reports(stage: str, reports: list[dict]) -> dict:
    counts: Counter = Counter()
    failures: Counter = Counter()
    for rep in reports:
        counts.update(rep.get("counts", {}))
        for f in rep.get("failures", []):
            failures[(f["partner"], f["error_class"], f["needs_person"])] += f["items"]
    return BatchReport(stage, counts, failures).as_dict()
