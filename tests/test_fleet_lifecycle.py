"""`spotwatch fleet watch` and Auto Scaling termination lifecycle actions, end to end.

SQS and EventBridge from moto's server; moto lacks CompleteLifecycleAction and
RecordLifecycleActionHeartbeat, so Auto Scaling is tests/fake_autoscaling.py on
127.0.0.1, which records every call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from tests.fake_autoscaling import FakeAutoScaling
from tests.fleet_helpers import (
    Fleet,
    Watch,
    make_hooks,
    no_crash,
    read_lines,
    watch_env,
)
from tests.fleet_helpers import make_fleet_fixture as make_fleet_fixture
from tests.fleet_helpers import watches_fixture as watches_fixture
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

LIFECYCLE_ACTION = "EC2 Instance-terminate Lifecycle Action"


@pytest.fixture
def autoscaling() -> Iterator[FakeAutoScaling]:
    with FakeAutoScaling() as fake:
        yield fake


def put_lifecycle_action(fleet: Fleet, instance_id: str, token: str) -> str:
    detail = {
        "LifecycleActionToken": token,
        "AutoScalingGroupName": "web-asg",
        "LifecycleHookName": "drain",
        "EC2InstanceId": instance_id,
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        "Origin": "AutoScalingGroup",
        "Destination": "EC2",
    }
    response = fleet.events.put_events(Entries=[{
        "Source": "aws.autoscaling", "DetailType": LIFECYCLE_ACTION, "Detail": json.dumps(detail),
        "Resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1a2b:"
                      "autoScalingGroupName/web-asg"],
    }])
    assert response["FailedEntryCount"] == 0
    return str(response["Entries"][0]["EventId"])


def test_completed_by_token_after_the_hooks_succeed_with_heartbeats_while_they_run(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path,
    autoscaling: FakeAutoScaling,
) -> None:
    autoscaling.add_instance("i-0a5", group="web-asg", hooks={"drain": 300})
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    hooks = make_hooks(tmp_path, ("10-drain", (
        'env | grep "^SPOTWATCH_" | sort > "$OUT_DIR/env"\n'
        "sleep 3.5\n"
    )))
    token = str(uuid.uuid4())
    event_id = put_lifecycle_action(fleet, "i-0a5", token)
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--wait-seconds", "1", "--lifecycle-heartbeat", "1", "--max-messages", "1"],
                    env=watch_env(out, AWS_ENDPOINT_URL_AUTO_SCALING=autoscaling.url))
    assert watch.wait(timeout=60) == 0, watch.stderr()
    no_crash(watch)

    env = dict(line.split("=", 1) for line in read_lines(out / "env"))
    assert env["SPOTWATCH_EVENT"] == "asg-termination"
    assert env["SPOTWATCH_ACTION"] == "terminate"
    assert env["SPOTWATCH_INSTANCE_ID"] == "i-0a5"
    assert env["SPOTWATCH_EVENT_ID"] == event_id
    assert (env["SPOTWATCH_ASG_NAME"], env["SPOTWATCH_ASG_LIFECYCLE_HOOK"]) == ("web-asg", "drain")
    assert env["SPOTWATCH_ASG_LIFECYCLE_TOKEN"] == token

    beats = autoscaling.calls_of("RecordLifecycleActionHeartbeat", ok_only=True)
    (completion,) = autoscaling.calls_of("CompleteLifecycleAction", ok_only=True)
    assert len(beats) >= 2  # 3.5 s of hook, a beat a second
    assert all(b.params["LifecycleActionToken"] == token for b in beats)
    assert completion.params == {"AutoScalingGroupName": "web-asg", "LifecycleHookName": "drain",
                                 "LifecycleActionToken": token, "LifecycleActionResult": "CONTINUE"}
    assert completion.time > max(b.time for b in beats)  # after the hooks, not during
    assert watch.logs("fleet.lifecycle_completed")
    assert fleet.counts() == (0, 0)


def test_no_completion_after_a_failed_hook_and_the_message_comes_back(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path,
    autoscaling: FakeAutoScaling,
) -> None:
    autoscaling.add_instance("i-0b6", group="web-asg", hooks={"drain": 300})
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    hooks = make_hooks(tmp_path, ("10-drain", 'echo x >> "$OUT_DIR/tries"\nexit 1\n'))
    put_lifecycle_action(fleet, "i-0b6", str(uuid.uuid4()))
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--wait-seconds", "1", "--visibility-timeout", "1"],
                    env=watch_env(out, AWS_ENDPOINT_URL_AUTO_SCALING=autoscaling.url))
    wait_until(lambda: len(read_lines(out / "tries")) >= 2, 30, "the event to come back")
    assert watch.terminate() == 0
    no_crash(watch)
    assert len(watch.logs("fleet.hooks_failed")) >= 2
    assert autoscaling.calls_of("CompleteLifecycleAction") == []
    assert sum(fleet.counts()) == 1  # still in the queue


def test_a_completion_that_fails_leaves_the_message_and_access_denied_names_the_permission(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path,
    autoscaling: FakeAutoScaling,
) -> None:
    autoscaling.add_instance("i-0c7", group="web-asg", hooks={"drain": 300})
    autoscaling.fail("CompleteLifecycleAction", "access-denied", times=1)
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    hooks = make_hooks(tmp_path, ("10-drain", 'echo x >> "$OUT_DIR/tries"\n'))
    token = str(uuid.uuid4())
    put_lifecycle_action(fleet, "i-0c7", token)
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--wait-seconds", "1", "--visibility-timeout", "1"],
                    env=watch_env(out, AWS_ENDPOINT_URL_AUTO_SCALING=autoscaling.url))
    watch.wait_for("fleet.lifecycle_completed", timeout=30)
    wait_until(lambda: fleet.counts() == (0, 0), 20, "the message to be deleted")
    assert watch.terminate() == 0
    no_crash(watch)
    (denied,) = watch.logs("fleet.lifecycle_denied")
    assert denied["permission"] == "autoscaling:CompleteLifecycleAction"
    assert read_lines(out / "tries") == ["x", "x"]  # the hooks again, then the completion
    calls = autoscaling.calls_of("CompleteLifecycleAction")
    assert [c.answered for c in calls] == ["access-denied", "ok"]
    assert {c.params["LifecycleActionToken"] for c in calls} == {token}
