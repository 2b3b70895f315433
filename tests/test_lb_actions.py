"""`spotwatch deregister` and `spotwatch replace` against moto's server on 127.0.0.1.

moto deregisters a target at once (no ``draining`` state) and does not take a
detached instance out of the group's target groups. ``draining`` below adds the
first, as ELB does it: a deregistered target drains for its target group's
``deregistration_delay.timeout_seconds``, then is gone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotwatch.deregister import delay_advice
from spotwatch.replace import Membership, why_not
from tests.helpers import REPO

pytestmark = pytest.mark.slow
REGION = "us-east-1"


def test_delay_advice_names_the_value_to_set() -> None:
    assert delay_advice("web", "arn:x", 20, 100) == ""
    text = delay_advice("web", "arn:x", 300, 95)
    assert "300 s is longer than the 95 s left" in text
    assert "Key=deregistration_delay.timeout_seconds,Value=90" in text


def test_replace_only_in_service() -> None:
    assert "not in an Auto Scaling group" in why_not(None)
    assert "already leaving" in why_not(Membership("g", "Terminating:Wait"))
    assert why_not(Membership("g", "InService")) == ""


@pytest.fixture
def draining(moto_server: str) -> Iterator[None]:
    from moto.elbv2.models import FakeTargetGroup

    original = FakeTargetGroup.deregister

    def deregister(self: Any, targets: list[dict[str, Any]]) -> None:
        delay = float(self.attributes.get("deregistration_delay.timeout_seconds", 300))
        for target in targets:
            found = self.targets.pop(target["Id"], None)
            if found is None:
                original(self, [target])
            self.terminated_targets[target["Id"]] = found  # moto's "draining"

            def drained(target_id: str = target["Id"], t: Any = found) -> None:
                self.terminated_targets.pop(target_id, None)
                self.deregistered_targets[target_id] = t

            timer = threading.Timer(delay, drained)
            timer.daemon = True
            timer.start()

    FakeTargetGroup.deregister = deregister  # type: ignore[method-assign]
    try:
        yield
    finally:
        FakeTargetGroup.deregister = original  # type: ignore[method-assign]


class World:
    def __init__(self, aws_env: dict[str, str], delays: tuple[int, ...]) -> None:
        import boto3

        self.ec2: Any = boto3.client("ec2", region_name=REGION)
        self.elbv2: Any = boto3.client("elbv2", region_name=REGION)
        self.autoscaling: Any = boto3.client("autoscaling", region_name=REGION)
        suffix = uuid.uuid4().hex[:8]
        vpc = self.ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24",
                                        AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]  # fmt: skip  # noqa: E501
        self.groups = []
        for i, delay in enumerate(delays):
            arn = self.elbv2.create_target_group(
                Name=f"tg{i}-{suffix}", Protocol="HTTP", Port=80 + i, VpcId=vpc,
                TargetType="instance",
            )["TargetGroups"][0]["TargetGroupArn"]  # fmt: skip
            self.elbv2.modify_target_group_attributes(
                TargetGroupArn=arn,
                Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}],
            )
            self.groups.append(arn)
        image = self.ec2.describe_images()["Images"][0]["ImageId"]
        template = self.ec2.create_launch_template(
            LaunchTemplateName=f"lt-{suffix}",
            LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.asg = f"asg-{suffix}"
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=self.asg, MinSize=1, MaxSize=4, DesiredCapacity=2,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            VPCZoneIdentifier=subnet, TargetGroupARNs=self.groups,
        )  # fmt: skip
        self.instance = self.members()[0]

    def members(self) -> list[str]:
        answer = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[self.asg])
        return [i["InstanceId"] for i in answer["AutoScalingGroups"][0]["Instances"]]

    def states(self, arn: str) -> list[str]:
        answer = self.elbv2.describe_target_health(
            TargetGroupArn=arn, Targets=[{"Id": self.instance}]
        )
        return [d["TargetHealth"]["State"] for d in answer["TargetHealthDescriptions"]]


def run(command: str, world: World, env: dict[str, str], tmp_path: Path, *args: str,
        left: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    full.update({
        "PYTHONPATH": str(REPO), "SPOTWATCH_EVENT": "spot-interruption",
        "SPOTWATCH_ACTION": "terminate", "SPOTWATCH_NOTICE_ID": "n-1",
        "SPOTWATCH_DEADLINE": str(int(time.time() + left)), "SPOTWATCH_INSTANCE_ID": world.instance,
        "SPOTWATCH_REGION": REGION, "SPOTWATCH_STATE_DIR": str(tmp_path / "state"),
    })  # fmt: skip
    full.update(env)
    return subprocess.run([sys.executable, "-m", "spotwatch", command, *args], env=full,
                          capture_output=True, text=True, timeout=90, check=False)  # fmt: skip


def test_deregister_from_both_target_groups_waits_out_the_delay(
    tmp_path: Path, aws_env: dict[str, str], draining: None
) -> None:
    world = World(aws_env, delays=(2, 3))
    for arn in world.groups:
        assert world.states(arn) != ["unused"]
    started = time.monotonic()
    result = run("deregister", world, aws_env, tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert f"attached to Auto Scaling group {world.asg}" in out
    assert out.count("out of target group") == 2 and "drained in" in out
    assert took >= 3  # waited for the longer delay
    for arn in world.groups:
        assert world.states(arn) == ["unused"]
    # The resume hook puts it back where it was.
    back = run("deregister", world, {**aws_env, "SPOTWATCH_PHASE": "resume"}, tmp_path, "--restore")
    assert back.returncode == 0, back.stderr
    assert back.stdout.count("back in target group") == 2
    for arn in world.groups:
        assert world.states(arn) not in (["unused"], ["draining"])


def test_a_delay_longer_than_the_time_left_is_reported(
    tmp_path: Path, aws_env: dict[str, str], draining: None
) -> None:
    world = World(aws_env, delays=(300,))
    started = time.monotonic()
    env = {**aws_env, "SPOTWATCH_RESERVE_AFTER": "0", "SPOTWATCH_DEADLINE_MARGIN": "1"}
    result = run("deregister", world, env, tmp_path, left=6)
    assert result.returncode == 0, result.stderr
    assert "deregistration delay 300 s is longer than the" in result.stdout
    assert "Value=" in result.stdout and "still draining from" in result.stdout
    assert re.search(r"longer than the [0-5] s left", result.stdout)
    assert time.monotonic() - started < 30  # gave up at the deadline


def test_configured_target_group_and_not_registered(
    tmp_path: Path, aws_env: dict[str, str]
) -> None:
    world = World(aws_env, delays=(0,))
    env = {**aws_env, "SPOTWATCH_ASG_NAME": "no-such-group"}
    first = run("deregister", world, env, tmp_path, "--target-group", world.groups[0])
    assert first.returncode == 0, first.stderr
    assert "configured" in first.stdout and "out of target group" in first.stdout
    again = run("deregister", world, env, tmp_path, "--target-group", world.groups[0])
    assert "not registered in target group" in again.stdout
    bad = run("deregister", world, env, tmp_path, "--target-group", "web")
    assert bad.returncode == 2 and "target group ARN" in bad.stderr


def test_replace_detaches_without_lowering_desired_capacity(
    tmp_path: Path, aws_env: dict[str, str]
) -> None:
    world = World(aws_env, delays=(0,))
    before = set(world.members())
    rebalance = run("replace", world, {**aws_env, "SPOTWATCH_EVENT": "rebalance-recommendation"},
                    tmp_path)  # fmt: skip
    assert rebalance.returncode == 0 and "no replacement" in rebalance.stdout
    assert set(world.members()) == before
    result = run("replace", world, aws_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "without lowering its desired capacity" in result.stdout
    group = world.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[world.asg])
    assert group["AutoScalingGroups"][0]["DesiredCapacity"] == 2
    members = set(world.members())
    assert world.instance not in members and len(members) == 2
    assert members - before  # a replacement was launched
    state = world.ec2.describe_instances(InstanceIds=[world.instance])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    again = run("replace", world, aws_env, tmp_path)
    assert again.returncode == 0 and "not again" in again.stdout
    assert set(world.members()) == members
