"""``spotwatch deregister``: out of every load balancer before the instance goes.

Where the instance is registered, found without scanning the account when it
can be: the target groups and Classic load balancers given (flags or
SPOTWATCH_TARGET_GROUPS / SPOTWATCH_CLASSIC_LBS), and those attached to its Auto
Scaling group; only when both name none, a bounded scan (at most ``scan_limit``
target groups and Classic load balancers). Then each registration (every port)
is deregistered, the draining watched until it ends or the deadline comes, and
a deregistration delay longer than the time left is reported with the value to
set. What was taken out is recorded in the state directory, so ``--restore``
(the resume hook) puts the instance back where it was.

The clients are boto3's ``elbv2``, ``elb`` and ``autoscaling``, made by the caller;
boto3 is imported by ``make_clients`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from spotwatch.clocks import SYSTEM, Clocks
from spotwatch.hook_context import HookContext, known_region

DRAIN_POLL = 1.0
MARK_PREFIX = "deregister:"
IAM = (
    "elasticloadbalancing:DescribeTargetHealth, DescribeTargetGroupAttributes, "
    "DeregisterTargets (RegisterTargets to restore), DescribeTargetGroups (scan), "
    "DeregisterInstancesFromLoadBalancer, DescribeLoadBalancerAttributes, "
    "DescribeLoadBalancers (scan); autoscaling:DescribeAutoScalingInstances, "
    "DescribeAutoScalingGroups"
)


@dataclass(frozen=True)
class Target:
    """One registration of the instance in a target group."""

    group_arn: str
    port: int | None
    availability_zone: str = ""

    @property
    def group_name(self) -> str:
        # arn:...:targetgroup/NAME/ID
        parts = self.group_arn.split("/")
        return parts[-2] if len(parts) >= 3 else self.group_arn

    def as_api(self, instance_id: str) -> dict[str, Any]:
        target: dict[str, Any] = {"Id": instance_id}
        if self.port is not None:
            target["Port"] = self.port
        if self.availability_zone:
            target["AvailabilityZone"] = self.availability_zone
        return target


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    classic: list[str] = field(default_factory=list)
    failed: int = 0
    still_draining: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(f"deregister: {text}")


def delay_advice(group: str, arn: str, delay: float, left: float, margin: float = 5.0) -> str:
    """What to tell the operator when ``delay`` does not fit in ``left`` seconds; '' if it does."""
    left = max(0.0, left)
    if delay <= left:
        return ""
    fits = max(0, int(left - margin))
    return (
        f"target group {group}: deregistration delay {int(delay)} s is longer than the "
        f"{int(left)} s left, so connections will be cut: set it to at most {fits} s "
        f"(aws elbv2 modify-target-group-attributes --target-group-arn {arn} "
        f"--attributes Key=deregistration_delay.timeout_seconds,Value={fits})"
    )


def make_clients(context: HookContext) -> dict[str, Any]:
    import boto3.session
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=10,
                    retries={"total_max_attempts": 3, "mode": "standard"})  # fmt: skip
    session = boto3.session.Session()
    region = known_region(context)
    return {
        name: session.client(name, region_name=region, config=config)
        for name in ("elbv2", "elb", "autoscaling")
    }


def group_attachments(clients: dict[str, Any], context: HookContext) -> tuple[str, list[str],
                                                                             list[str]]:
    """(group, its target group ARNs, its Classic load balancer names)."""
    autoscaling = clients["autoscaling"]
    group = context.asg_name
    if not group:
        answer = autoscaling.describe_auto_scaling_instances(InstanceIds=[context.instance_id])
        found = [
            item.get("AutoScalingGroupName", "")
            for item in answer.get("AutoScalingInstances", [])
            if item.get("InstanceId") == context.instance_id
        ]
        group = found[0] if found else ""
    if not group:
        return "", [], []
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    for item in groups.get("AutoScalingGroups", []):
        return (
            group,
            list(item.get("TargetGroupARNs", [])),
            list(item.get("LoadBalancerNames", [])),
        )
    return group, [], []


def scan(clients: dict[str, Any], instance_id: str, limit: int) -> tuple[list[str], list[str],
                                                                          bool]:
    """Target groups and Classic load balancers holding ``instance_id``, looking at no
    more than ``limit`` of each; the flag says the limit cut the scan short."""
    elbv2, elb = clients["elbv2"], clients["elb"]
    groups: list[str] = []
    seen = 0
    cut = False
    for page in elbv2.get_paginator("describe_target_groups").paginate(
        PaginationConfig={"PageSize": min(limit, 400)}
    ):
        for group in page.get("TargetGroups", []):
            if seen >= limit:
                cut = True
                break
            seen += 1
            if group.get("TargetType", "instance") != "instance":
                continue
            if _registrations(elbv2, group["TargetGroupArn"], instance_id):
                groups.append(group["TargetGroupArn"])
        if cut:
            break
    balancers: list[str] = []
    seen = 0
    for page in elb.get_paginator("describe_load_balancers").paginate(
        PaginationConfig={"PageSize": min(limit, 400)}
    ):
        for balancer in page.get("LoadBalancerDescriptions", []):
            if seen >= limit:
                cut = True
                break
            seen += 1
            ids = [i.get("InstanceId") for i in balancer.get("Instances", [])]
            if instance_id in ids:
                balancers.append(balancer["LoadBalancerName"])
        if seen >= limit:
            break
    return groups, balancers, cut


def _registrations(elbv2: Any, arn: str, instance_id: str) -> list[Target]:
    answer = elbv2.describe_target_health(TargetGroupArn=arn)
    out = []
    for item in answer.get("TargetHealthDescriptions", []):
        target = item.get("Target", {})
        state = item.get("TargetHealth", {}).get("State", "")
        if target.get("Id") == instance_id and state not in ("draining", "unused"):
            out.append(Target(arn, target.get("Port"), target.get("AvailabilityZone", "")))
    return out


def _delay(elbv2: Any, arn: str) -> float:
    answer = elbv2.describe_target_group_attributes(TargetGroupArn=arn)
    for attribute in answer.get("Attributes", []):
        if attribute.get("Key") == "deregistration_delay.timeout_seconds":
            try:
                return float(attribute.get("Value", 300))
            except ValueError:
                break
    return 300.0


def _classic_drain(elb: Any, name: str) -> float:
    answer = elb.describe_load_balancer_attributes(LoadBalancerName=name)
    draining = answer.get("LoadBalancerAttributes", {}).get("ConnectionDraining", {})
    return float(draining.get("Timeout", 0)) if draining.get("Enabled") else 0.0


@dataclass(frozen=True)
class Named:
    """The load balancers the operator named (target group ARNs, Classic names),
    and how many of each a scan may read when neither these nor the Auto Scaling
    group name any."""

    target_groups: Sequence[str]
    classic: Sequence[str]
    scan_limit: int


def deregister(
    clients: dict[str, Any],
    context: HookContext,
    named: Named,
    *,
    act_by: float,
    wait: bool = True,
    clocks: Clocks = SYSTEM,
    error_text: Callable[[BaseException], str] = str,
) -> Report:
    """Take ``context.instance_id`` out of every load balancer; wait for the draining."""
    from botocore.exceptions import BotoCoreError, ClientError

    report = Report()
    instance = context.instance_id
    clock, sleep, scan_limit = clocks.wall, clocks.sleep, named.scan_limit
    groups, balancers = list(named.target_groups), list(named.classic)
    how = "configured" if groups or balancers else ""
    try:
        asg, asg_groups, asg_balancers = group_attachments(clients, context)
    except (ClientError, BotoCoreError) as exc:
        report.say(f"cannot read the Auto Scaling group: {error_text(exc)}")
        asg, asg_groups, asg_balancers = "", [], []
    if asg_groups or asg_balancers:
        how = f"{how} and " if how else ""
        how += f"attached to Auto Scaling group {asg}"
    groups += [g for g in asg_groups if g not in groups]
    balancers += [b for b in asg_balancers if b not in balancers]
    if not groups and not balancers:
        try:
            groups, balancers, cut = scan(clients, instance, scan_limit)
        except (ClientError, BotoCoreError) as exc:
            report.say(f"cannot scan the load balancers: {error_text(exc)}")
            report.failed += 1
            return report
        how = f"found by a scan of at most {scan_limit} of each"
        if cut:
            report.say(
                f"the scan stopped at {scan_limit} target groups or load balancers: name "
                "yours with --target-group / --load-balancer (or attach them to the group)"
            )
    if not groups and not balancers:
        report.say(f"{instance} is in no load balancer ({how or 'none configured, none found'})")
        return report
    report.say(f"{len(groups)} target group(s), {len(balancers)} Classic load balancer(s), {how}")

    elbv2, elb = clients["elbv2"], clients["elb"]
    waits: list[tuple[Target, float]] = []
    for arn in groups:
        try:
            targets = _registrations(elbv2, arn, instance)
            if not targets:
                report.say(f"not registered in target group {Target(arn, None).group_name}")
                continue
            elbv2.deregister_targets(
                TargetGroupArn=arn, Targets=[t.as_api(instance) for t in targets]
            )
            delay = _delay(elbv2, arn)
        except (ClientError, BotoCoreError) as exc:
            report.failed += 1
            report.say(f"target group {arn}: {error_text(exc)}")
            continue
        ports = ", ".join(str(t.port) for t in targets)
        report.say(
            f"out of target group {targets[0].group_name} (port {ports}); "
            f"deregistration delay {int(delay)} s"
        )
        advice = delay_advice(targets[0].group_name, arn, delay, act_by - clock())
        if advice:
            report.say(advice)
        report.targets += targets
        waits += [(t, delay) for t in targets]
    classic_until = clock()
    for name in balancers:
        try:
            elb.deregister_instances_from_load_balancer(
                LoadBalancerName=name, Instances=[{"InstanceId": instance}]
            )
            drain = _classic_drain(elb, name)
        except (ClientError, BotoCoreError) as exc:
            if "InvalidInstance" in error_text(exc):
                report.say(f"not registered in Classic load balancer {name}")
                continue
            report.failed += 1
            report.say(f"Classic load balancer {name}: {error_text(exc)}")
            continue
        report.classic.append(name)
        report.say(f"out of Classic load balancer {name}; connection draining {int(drain)} s")
        if drain > act_by - clock():
            report.say(
                f"Classic load balancer {name}: connection draining {int(drain)} s is longer "
                f"than the {int(act_by - clock())} s left: lower its ConnectionDraining Timeout"
            )
        classic_until = max(classic_until, clock() + drain)
    if wait:
        _wait(elbv2, instance, waits, min(classic_until, act_by), act_by, report, clock, sleep)
    return report


def _wait(
    elbv2: Any,
    instance: str,
    waits: list[tuple[Target, float]],
    classic_until: float,
    act_by: float,
    report: Report,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    started = clock()
    pending = [t for t, _ in waits]
    while True:
        still = []
        for target in pending:
            try:
                answer = elbv2.describe_target_health(
                    TargetGroupArn=target.group_arn, Targets=[target.as_api(instance)]
                )
            except Exception:  # a failed look counts as "still draining"
                still.append(target)
                continue
            states = [
                d.get("TargetHealth", {}).get("State", "")
                for d in answer.get("TargetHealthDescriptions", [])
            ]
            if "draining" in states:
                still.append(target)
        pending = still
        now = clock()
        if (not pending and now >= classic_until) or now >= act_by:
            break
        sleep(min(DRAIN_POLL, max(0.05, act_by - now)))
    took = clock() - started
    if pending:
        names = sorted({t.group_name for t in pending})
        report.still_draining = names
        report.say(f"still draining from {', '.join(names)} at the deadline ({took:.1f} s)")
    elif waits or classic_until > started:
        report.say(f"drained in {took:.1f} s")


def restore(
    clients: dict[str, Any],
    instance: str,
    saved: dict[str, Any],
    error_text: Callable[[BaseException], str] = str,
) -> Report:
    """Register ``instance`` again where ``saved`` (a deregister's record) says it was."""
    from botocore.exceptions import BotoCoreError, ClientError

    report = Report()
    for item in saved.get("targets", []):
        target = Target(item["group_arn"], item.get("port"), item.get("availability_zone", ""))
        try:
            clients["elbv2"].register_targets(
                TargetGroupArn=target.group_arn, Targets=[target.as_api(instance)]
            )
        except (ClientError, BotoCoreError) as exc:
            report.failed += 1
            report.say(f"target group {target.group_name}: {error_text(exc)}")
            continue
        report.targets.append(target)
        report.say(f"back in target group {target.group_name} (port {target.port})")
    for name in saved.get("classic", []):
        try:
            clients["elb"].register_instances_with_load_balancer(
                LoadBalancerName=name, Instances=[{"InstanceId": instance}]
            )
        except (ClientError, BotoCoreError) as exc:
            report.failed += 1
            report.say(f"Classic load balancer {name}: {error_text(exc)}")
            continue
        report.classic.append(name)
        report.say(f"back in Classic load balancer {name}")
    if not saved.get("targets") and not saved.get("classic"):
        report.say(f"no record of load balancers {instance} was taken out of; nothing to do")
    return report


def saved_record(report: Report) -> dict[str, Any]:
    return {
        "targets": [
            {"group_arn": t.group_arn, "port": t.port, "availability_zone": t.availability_zone}
            for t in report.targets
        ],
        "classic": list(report.classic),
    }
