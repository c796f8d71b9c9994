"""The one place that turns a partners configuration into clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from partners.agency import AgencyClient
from partners.config import PartnersConfig
from partners.issuer import IssuerClient
from partners.notifier import NotifierClient
from partners.payment import PaymentClient
from partners.registry import RegistryClient


@dataclass
class Partners:
    registry: RegistryClient
    agencies: list[AgencyClient]
    payments: dict[str, PaymentClient]
    issuer: IssuerClient
    notifier: NotifierClient
    config: PartnersConfig

    def close(self) -> None:
        """Closes every client's HTTP sessions."""
        for client in [self.registry, *self.agencies, *self.payments.values()]:
            client.close()
        self.issuer.close()
        self.notifier.close()


def build_partners(
    config: PartnersConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    shared_pacer: Callable[[str], None] | None = None,
) -> Partners:
    """One client per configured partner; agencies keep the file's order."""
    return Partners(
        registry=RegistryClient(config.registry, sleep=sleep, shared_pacer=shared_pacer),
        agencies=[AgencyClient(a, sleep=sleep, shared_pacer=shared_pacer) for a in config.agencies],
        payments={
            pid: PaymentClient(p, sleep=sleep, shared_pacer=shared_pacer)
            for pid, p in config.payment_providers.items()
        },
        issuer=IssuerClient(config.card_issuer, sleep=sleep, shared_pacer=shared_pacer),
        notifier=NotifierClient(config.notifier, sleep=sleep, shared_pacer=shared_pacer),
        config=config,
    )
