"""What ``spotwatch run`` watches on Google Compute Engine and Azure.

AWS keeps its own assembly in ``daemon.build_watcher``; this gives the monitors,
the identity reader and the follow-ups for the other clouds, so the daemon only
chooses between them. Imports nothing of boto3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from spotwatch.notice import Identity

AZURE_DEFAULT_INTERVAL = 1.0  # Microsoft recommends polling Scheduled Events every second


@dataclass
class CloudSources:
    monitors: list[Any]
    read_identity: Callable[[], Identity]
    followups: list[Any] = field(default_factory=list)
    feeds: list[Any] = field(default_factory=list)  # to close when done (tests, the drill)

    def close(self) -> None:
        for feed in self.feeds:
            feed.close()


def interval_for(cloud: str, interval: float, given: bool) -> float:
    """The poll interval: ``--interval`` when given, else 1 s on Azure, else the default."""
    if cloud == "azure" and not given:
        return AZURE_DEFAULT_INTERVAL
    return interval


def build(
    cloud: str,
    base_url: str,
    watch: Sequence[str],
    *,
    interval: float,
    approve: bool = True,
    wake: Callable[[], None] = lambda: None,
    maintenance_lead: float = 300.0,  # config.DEFAULT_MAINTENANCE_LEAD
) -> CloudSources:
    """Monitors (feeds started), identity and follow-ups for ``cloud`` (gcp or azure)."""
    chosen = frozenset(watch)
    if cloud == "gcp":
        from spotwatch import gcp

        gcp_monitors: list[Any] = list(gcp.monitors(base_url, chosen, wake=wake))
        if "maintenance" in chosen:
            from spotwatch.gce_upcoming import UpcomingMaintenanceMonitor

            gcp_monitors.append(
                UpcomingMaintenanceMonitor(
                    gcp.GceMetadata(base_url), lead=maintenance_lead, migrate="migrate" in chosen
                )
            )
        return CloudSources(
            monitors=gcp_monitors,
            read_identity=lambda: gcp.read_identity(base_url),
            feeds=list(gcp_monitors),
        )
    if cloud == "azure":
        from spotwatch import azure

        registry: dict[str, str] = {}
        az_monitors, feed = azure.monitors(base_url, chosen, interval, registry, wake=wake)
        approver = azure.Approver(base_url, registry, feed, chosen, enabled=approve)
        return CloudSources(
            monitors=list(az_monitors),
            read_identity=lambda: azure.read_identity(base_url),
            followups=[approver],
            feeds=[feed],
        )
    raise ValueError(f"no sources for cloud {cloud!r}")
