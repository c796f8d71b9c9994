"""The one place that turns a partners configuration into clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from partners.agency import AgencyClient
from partners.config import PartnersConfig
from partners.issuer import IssuerClient
from partners.limits import Limiter, SharedLimits
from partners.notifier import NotifierClient
from partners.payment import PaymentClient
from partners.registry import RegistryClient
from partners.training import TrainingPlatformClient


@dataclass
class Partners:
    registry: RegistryClient
    agencies: list[AgencyClient]
    payments: dict[str, PaymentClient]
    issuer: IssuerClient
    notifier: NotifierClient
    config: PartnersConfig
    # The training platforms' feeds, in the file's order.
    platforms: list[TrainingPlatformClient] = field(default_factory=list)

    def close(self) -> None:
        """Closes every client's HTTP sessions."""
        for client in [self.registry, *self.agencies, *self.payments.values(), *self.platforms]:
            client.close()
        self.issuer.close()
        self.notifier.close()


def build_partners(
    config: PartnersConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    limiter: Limiter | None = None,
    shared: Mapping[str, SharedLimits] | None = None,
    on_call: Callable[[float, float], None] | None = None,
) -> Partners:
    """One client per configured partner; agencies and platforms keep the file's order. `limiter`:
    shared beyond the process (partners/limits.py); `shared`: a worker pool's limits per
    partner id, replacing each client's own."""
    shared = shared or {}

    def options(partner_id: str) -> dict:
        return {
            "sleep": sleep,
            "limiter": limiter,
            "shared": shared.get(partner_id),
            "on_call": on_call,
        }

    return Partners(
        registry=RegistryClient(config.registry, **options(config.registry.id)),
        agencies=[AgencyClient(a, **options(a.id)) for a in config.agencies],
        payments={
            pid: PaymentClient(p, **options(p.id)) for pid, p in config.payment_providers.items()
        },
        issuer=IssuerClient(config.card_issuer, **options(config.card_issuer.id)),
        notifier=NotifierClient(config.notifier, **options(config.notifier.id)),
        config=config,
        platforms=[TrainingPlatformClient(t, **options(t.id)) for t in config.training_platforms],
    )
