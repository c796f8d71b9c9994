"""Partner rate limits shared by every worker of a wave: Prefect global rate limits.

Each client already paces itself in-process; when batches run on several machines
(Dask workers), the partner's `max_rps` must hold for all of them together. Then each
request first takes one slot of the partner's global rate limit (strict: a missing
limit is an error, not a silent no-op), i.e. one slot per batch call, never per person.
"""

from __future__ import annotations

import math
import os

from partners.config import PartnersConfig

ENV = "PRAKERJA_SHARED_RATE_LIMITS"


def enabled() -> bool:
    return os.environ.get(ENV, "").lower() in ("1", "true", "yes")


def limit_name(partner_id: str) -> str:
    return f"prakerja-partner-{partner_id}"


def ensure_partner_limits(config: PartnersConfig) -> list[str]:
    """Creates or updates one global rate limit per partner at its max_rps."""
    from prefect import get_client

    partners = [
        config.registry,
        *config.agencies,
        *config.payment_providers.values(),
        config.card_issuer,
        config.notifier,
    ]
    names = []
    with get_client(sync_client=True) as client:
        for p in partners:
            client.upsert_global_concurrency_limit_by_name(
                limit_name(p.id),
                limit=max(1, math.ceil(p.max_rps)),
                slot_decay_per_second=float(p.max_rps),
            )
            names.append(limit_name(p.id))
    return names


def take_partner_slot(partner_id: str) -> None:
    from prefect.concurrency.sync import rate_limit

    rate_limit(limit_name(partner_id), occupy=1, strict=True)
