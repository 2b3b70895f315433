"""AWS: the spot notice, rebalance recommendations, scheduled maintenance and Auto
Scaling terminations, all from IMDS (``spotwatch.imds``) in one poll.

The Auto Scaling client (boto3) of a lifecycle hook is made on the follow-up's
thread, when a termination needs it: nothing here imports boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spotwatch.clouds.base import Cloud, CloudSources

if TYPE_CHECKING:
    from spotwatch.config import RunConfig
    from spotwatch.followup import FollowUp
    from spotwatch.imds import ImdsClient
    from spotwatch.monitor import Monitor
    from spotwatch.notice import Identity
    from spotwatch.stopper import Stopper


def poll_budget(interval: float) -> float:
    """Seconds one AWS poll may take: 80% of the interval, at least 0.5 s, at most 4 s."""
    return max(0.5, min(4.0, interval * 0.8))


class AwsCloud(Cloud):
    """EC2: every source is a GET on IMDS; one poll's GETs share one budget."""

    name = "aws"
    sources = ("spot", "rebalance", "maintenance", "asg", "shutdown")

    def build(self, config: RunConfig, *, interval: float, stop: Stopper) -> CloudSources:
        from spotwatch.imds import ImdsClient, read_identity

        # One poll (retries, the termination-time fallback and every AWS source
        # included) must fit well inside the interval.
        client = ImdsClient(config.imds_url, budget=poll_budget(config.interval), stop=stop)
        return CloudSources(
            monitors=_monitors(config, client),
            read_identity=lambda: read_identity(client),
            followups=list(_followups(config, client)),
            poll_scope=client.poll_window,
        )


def _monitors(config: RunConfig, client: ImdsClient) -> list[Monitor]:
    from spotwatch.monitors import RebalanceMonitor, SpotInterruptionMonitor

    sources = config.sources
    monitors: list[Monitor] = []
    if "spot" in sources:
        monitors.append(SpotInterruptionMonitor(client))
    if "rebalance" in sources:
        monitors.append(RebalanceMonitor(client))
    if "maintenance" in sources:
        from spotwatch.maintenance import MaintenanceMonitor

        monitors.append(MaintenanceMonitor(client, lead=config.maintenance_lead))
    if "asg" in sources:
        from spotwatch.asg import AsgTerminationMonitor

        monitors.append(
            AsgTerminationMonitor(
                client, deadline_seconds=config.asg_deadline, group_name=config.asg_name
            )
        )
    return monitors


def _followups(config: RunConfig, client: ImdsClient) -> list[FollowUp]:
    """``--asg-lifecycle-hook``: heartbeats and CompleteLifecycleAction around the hooks."""
    if "asg" not in config.sources or not config.asg_lifecycle_hook:
        return []
    from spotwatch import lifecycle
    from spotwatch.asg import LifecycleFollowUp
    from spotwatch.imds import read_identity

    known: list[Identity] = []

    def identity() -> Identity:
        if not known:
            known.append(read_identity(client))
        return known[0]

    return [
        LifecycleFollowUp(
            hook=config.asg_lifecycle_hook,
            group=config.asg_name,
            make_client=lambda: lifecycle.make_client(
                identity().region, endpoint=lifecycle.endpoint_url()
            ),
            instance_id=lambda: identity().instance_id,
        )
    ]
