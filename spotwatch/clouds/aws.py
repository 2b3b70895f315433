"""AWS: the spot notice, rebalance recommendations, scheduled maintenance and Auto
Scaling terminations, all from IMDS (``spotwatch.imds``) in one poll.

The Auto Scaling client (boto3) of a lifecycle hook is made on the follow-up's
thread, when a termination needs it: nothing here imports boto3.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from spotwatch.clouds.base import Cloud, CloudSources, DrillSim, Rehearsal, SimRequest

if TYPE_CHECKING:
    from spotwatch.config import RunConfig
    from spotwatch.followup import FollowUp
    from spotwatch.imds import ImdsClient
    from spotwatch.imdssim import ImdsSimulator
    from spotwatch.monitor import Monitor
    from spotwatch.notice import Identity
    from spotwatch.stopper import Stopper


# The maintenance event a drill of --action A schedules.
MAINTENANCE_CODES = {
    "terminate": "instance-retirement",
    "stop": "instance-stop",
    "hibernate": "instance-stop",
}
DRILL_EVENT_ID = "instance-event-0drill000000000000"
SIM_EVENT_ID = "instance-event-0123456789abcdef0"


def poll_budget(interval: float) -> float:
    """Seconds one AWS poll may take: 80% of the interval, at least 0.5 s, at most 4 s."""
    return max(0.5, min(4.0, interval * 0.8))


class AwsCloud(Cloud):
    """EC2: every source is a GET on IMDS; one poll's GETs share one budget."""

    name = "aws"
    title = "AWS"
    sources = ("spot", "rebalance", "maintenance", "asg", "shutdown")
    drill_events = ("spot", "rebalance", "maintenance", "asg", "shutdown")
    probe_rank = 1  # a token from any server proves little: asked last

    def from_dmi(self, read: Callable[[str], str]) -> str | None:
        vendor, bios_vendor = read("sys_vendor"), read("bios_vendor")
        if (
            vendor == "Amazon EC2"
            or bios_vendor == "Amazon EC2"
            or "amazon" in read("bios_version").lower()
        ):
            return f"DMI sys_vendor {vendor!r}, bios {bios_vendor!r}"
        return None

    def probe(self, base_url: str) -> str | None:
        from spotwatch.clouds.detect import ask

        answer = ask(
            "PUT", base_url + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        if answer is not None and answer.status == 200:
            return f"{base_url} issued an IMDSv2 token"
        answer = ask("GET", base_url + "/latest/meta-data/instance-id", {})
        if answer is not None and answer.status in (200, 401):
            return f"{base_url} answered /latest/meta-data (IMDS)"
        return None

    def leads(self, config: RunConfig) -> list[tuple[float, str]]:
        from spotwatch.notice import DEFAULT_LEAD_SECONDS

        leads = [
            (DEFAULT_LEAD_SECONDS, f"the {source} notice on AWS")
            for source in ("spot", "rebalance")
            if source in config.sources
        ]
        if "asg" in config.sources:
            leads.append((config.asg_deadline, "--asg-deadline"))
        # maintenance: --maintenance-lead, checked on its own when the flags are read.
        return leads

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

    def serve(self, request: SimRequest) -> ImdsSimulator:
        from spotwatch.imdssim import ImdsSimulator, format_time

        sim = ImdsSimulator(
            host=request.host, port=request.port, require_token=request.require_token
        )
        sim.start()
        now = time.time()
        if request.notice_in is not None:
            at = now + request.notice_in
            sim.schedule_notice(request.action, at, format_time(at + request.lead))
        if request.rebalance_in is not None:
            sim.schedule_rebalance(now + request.rebalance_in)
        if request.asg_terminated_in is not None:
            sim.schedule_lifecycle_state("InService", now)
            sim.schedule_lifecycle_state("Terminated", now + request.asg_terminated_in)
        if request.maintenance_in is not None:
            sim.schedule_maintenance(
                SIM_EVENT_ID, now + request.maintenance_in, code=request.maintenance_code
            )
        return sim

    def drill(self, rehearsal: Rehearsal) -> DrillSim:
        from spotwatch.imdssim import ImdsSimulator, format_time

        sim = ImdsSimulator(require_token=True)

        def schedule(appear_at: float) -> tuple[float, str]:
            """The event appears ``rehearsal.notice_in`` s in; due --lead after that."""
            deadline = appear_at + rehearsal.lead
            shown = format_time(deadline)
            event, notice_in = rehearsal.event, rehearsal.notice_in
            if event == "spot":
                sim.schedule_notice(rehearsal.action, appear_at=appear_at, notice_time=shown)
            elif event == "rebalance":
                sim.schedule_rebalance(appear_at=appear_at)
            elif event == "asg":
                sim.schedule_lifecycle_state("InService", at=appear_at - notice_in)
                sim.schedule_lifecycle_state("Terminated", at=appear_at)
            else:
                # Listed from the start, as AWS announces days ahead; due --lead before
                # NotBefore.
                sim.schedule_maintenance(
                    DRILL_EVENT_ID,
                    int(deadline),
                    code=MAINTENANCE_CODES[rehearsal.action],
                    at=appear_at - notice_in,
                )
            return deadline, shown

        return DrillSim(sim, schedule)

    def describe_drill(self, rehearsal: Rehearsal, notice_time: str) -> tuple[str, str]:
        if rehearsal.event == "rebalance":
            return "rebalance recommendation", "rebalance recommendation"
        if rehearsal.event == "asg":
            return "Auto Scaling termination", "lifecycle state Terminated"
        if rehearsal.event == "maintenance":
            code = MAINTENANCE_CODES[rehearsal.action]
            return (
                f"scheduled maintenance {code}",
                f"{code} due, NotBefore {notice_time} ({rehearsal.lead:g} s lead)",
            )
        action = rehearsal.action
        return f"{action} notice", f"{action} at {notice_time}"


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


ADAPTER = AwsCloud()
