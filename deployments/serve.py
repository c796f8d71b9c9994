"""`prakerja serve`: the deployments of operations.md served from this machine, no work pool.

The same five deployments as `prefect.yaml` (tests/ops check that both agree): names,
schedules (cron in Asia/Jakarta), concurrency, tags and parameters. Use one or the other:
both register the same deployment names, so the last one to start wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIMEZONE = "Asia/Jakarta"
POOL = "prakerja-process"
TAGS = ["prakerja"]


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # as in prefect.yaml
    cron: str | None
    description: str
    parameters: dict = field(default_factory=dict)

    @property
    def flow_attr(self) -> str:
        return self.entrypoint.rsplit(":", 1)[1]


DEPLOYMENTS = (
    DeploymentSpec(
        "weekly-wave",
        "flows/operations.py:weekly_wave",
        "0 17 * * 4",
        "Thursdays 17:00 WIB, an hour after registration closes: runs the due wave from the "
        "drop folder (lowest wave-<N>.csv with no wave yet); alerts when there is no export.",
    ),
    DeploymentSpec(
        "overnight-rollout",
        "flows/operations.py:overnight_rollout",
        "0 22 * * *",
        "Nightly 22:00 WIB: credits every confirmed participant not yet credited, paced to "
        "finish before the wave's rollout deadline (06:00 WIB); alerts when it will be late.",
    ),
    DeploymentSpec(
        "rerun-wave",
        "flows/operations.py:rerun_wave",
        None,
        "Manual: resumes a wave, all stages or the chosen ones, only for pending work.",
    ),
    DeploymentSpec(
        "raise-quota",
        "flows/operations.py:raise_quota_flow",
        None,
        "Manual: raises an open wave's quota and processes the new seats.",
    ),
    DeploymentSpec(
        "daily-payouts",
        "flows/operations.py:daily_payouts",
        "0 2 * * *",
        "Daily 02:00 WIB: today's payout run (training feeds, revocations, incentives and "
        "survey payments due, each re-checked, then paid); pauses for sign-off if required.",
    ),
)


def runner_deployments() -> list:
    """The deployments as `prefect.serve` takes them."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from flows import operations

    out = []
    for spec in DEPLOYMENTS:
        flow = getattr(operations, spec.flow_attr)
        out.append(
            flow.to_deployment(
                name=spec.name,
                description=spec.description,
                schedules=[Cron(spec.cron, timezone=TIMEZONE)] if spec.cron else None,
                concurrency_limit=ConcurrencyLimitConfig(
                    limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
                ),
                tags=TAGS,
                parameters=spec.parameters,
            )
        )
    return out


def deployed_to_a_pool() -> dict[str, str]:
    """Deployments of ours on the server that `prefect deploy` made (work pool, pull
    steps). Serving over them keeps their pull steps and the served runs crash, so
    `prakerja serve` refuses unless told to replace them."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for spec in DEPLOYMENTS:
            try:
                d = client.read_deployment_by_name(f"{spec.name}/{spec.name}")
            except ObjectNotFound:
                continue
            if d.work_pool_name or d.pull_steps:
                found[spec.name] = d.work_pool_name or "pull steps"
    return found


def remove(names: list[str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in names:
            client.delete_deployment(client.read_deployment_by_name(f"{name}/{name}").id)


def serve(limit: int | None = None) -> None:
    """Blocks, running scheduled and UI-created runs in subprocesses of this process."""
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments(), limit=limit)
