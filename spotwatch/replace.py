"""``spotwatch replace``: start the Auto Scaling replacement now, not after the instance is gone.

Two documented ways exist; the default is the safer one:

- ``detach`` (default): ``DetachInstances`` with ``ShouldDecrementDesiredCapacity``
  false. The group is one short at once and launches the replacement while this
  instance keeps running its hooks. Auto Scaling deregisters the detached
  instance from the group's load balancers and target groups (with their
  draining). The instance is no longer the group's: its termination lifecycle
  hooks do not run for it, and the spot reclaim ends it as a plain instance.
- ``unhealthy``: ``SetInstanceHealth Unhealthy`` (grace period ignored). Auto
  Scaling *terminates* this instance (through the termination lifecycle hooks,
  ``Terminating:Wait`` until they complete or time out) and launches the
  replacement after, unless the group's instance maintenance policy launches
  first. It can cut the hooks short, so it is for groups whose lifecycle hook
  is what holds the instance.

Never for a rebalance recommendation unless asked; never twice for one instance
(a mark in the state directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DETACH = "detach"
UNHEALTHY = "unhealthy"
METHODS = (DETACH, UNHEALTHY)
MARK_PREFIX = "replace:"
LEAVING = ("Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated",
           "Detaching", "Detached", "EnteringStandby")  # fmt: skip
IAM = {
    DETACH: "autoscaling:DescribeAutoScalingInstances, autoscaling:DetachInstances",
    UNHEALTHY: "autoscaling:DescribeAutoScalingInstances, autoscaling:SetInstanceHealth",
}


@dataclass(frozen=True)
class Membership:
    group: str
    state: str


def membership(autoscaling: Any, instance_id: str) -> Membership | None:
    answer = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
    for item in answer.get("AutoScalingInstances", []):
        if item.get("InstanceId") == instance_id:
            return Membership(
                str(item.get("AutoScalingGroupName", "")), str(item.get("LifecycleState", ""))
            )
    return None


def why_not(member: Membership | None) -> str:
    """Why no replacement is started for ``member``, or ''."""
    if member is None or not member.group:
        return "not in an Auto Scaling group; nothing to replace"
    if member.state in LEAVING or member.state.startswith(("Terminat", "Warmed")):
        return (
            f"already leaving group {member.group} (lifecycle state {member.state}): "
            "Auto Scaling replaces it on its own"
        )
    return ""


def start_replacement(
    autoscaling: Any, instance_id: str, member: Membership, method: str
) -> str:
    """Do it; returns what was done, in words."""
    if method == DETACH:
        autoscaling.detach_instances(
            InstanceIds=[instance_id],
            AutoScalingGroupName=member.group,
            ShouldDecrementDesiredCapacity=False,
        )
        return (
            f"detached {instance_id} from {member.group} without lowering its desired "
            "capacity: the replacement is being launched now; this instance runs on"
        )
    autoscaling.set_instance_health(
        InstanceId=instance_id, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False
    )
    return (
        f"marked {instance_id} unhealthy in {member.group}: Auto Scaling terminates it "
        "(through its lifecycle hooks) and launches a replacement"
    )


def make_client(region: str | None) -> Any:
    import boto3.session
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=10,
                    retries={"total_max_attempts": 3, "mode": "standard"})  # fmt: skip
    return boto3.session.Session().client("autoscaling", region_name=region, config=config)


def error_with_iam(text: str, method: str) -> str:
    if "AccessDenied" in text or "not authorized" in text:
        return f"{text} (the instance role needs {IAM[method]})"
    return text
