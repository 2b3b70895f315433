"""EventBridge envelope parsing, hook environment and de-duplication (pure, no I/O)."""

from __future__ import annotations

import json

import pytest

from spotwatch.fleet_events import (
    DETAIL_TYPES,
    EVENT_PATTERN,
    FleetEvent,
    LifecycleAction,
    NotAnEvent,
    SeenEvents,
    event_environment,
    event_line,
    event_record,
    lifecycle_action,
    parse_message,
)
from spotwatch.fleet_settings import region_from_queue_url


def envelope(detail_type: str, detail: dict[str, object], **extra: object) -> str:
    """An EventBridge envelope shaped like the ones AWS documents for these events."""
    body: dict[str, object] = {
        "version": "0",
        "id": "7c0a4c8c-1ad3-4fe4-b3a0-0d9b0f3ddf1e",
        "detail-type": detail_type,
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-11-26T02:58:25Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc123def4567890"],
        "detail": detail,
    }
    body.update(extra)
    return json.dumps(body)


@pytest.mark.parametrize(
    ("detail_type", "detail", "kind", "action"),
    [
        (
            "EC2 Spot Instance Interruption Warning",
            {"instance-id": "i-0abc123def4567890", "instance-action": "hibernate"},
            "spot-interruption",
            "hibernate",
        ),
        (
            "EC2 Instance Rebalance Recommendation",
            {"instance-id": "i-0abc123def4567890"},
            "rebalance-recommendation",
            "rebalance",
        ),
        (
            "EC2 Spot Instance Request Fulfillment",
            {"spot-instance-request-id": "sir-1a2b3c4d", "instance-id": "i-0abc123def4567890"},
            "spot-fulfillment",
            "fulfilled",
        ),
        (
            "EC2 Instance State-change Notification",
            {"instance-id": "i-0abc123def4567890", "state": "shutting-down"},
            "state-change",
            "shutting-down",
        ),
    ],
)
def test_each_detail_type_parses(
    detail_type: str, detail: dict[str, object], kind: str, action: str
) -> None:
    body = envelope(detail_type, detail)
    event = parse_message(body)
    assert event.actionable
    assert (event.kind, event.action) == (kind, action)
    assert event.instance_id == "i-0abc123def4567890"
    assert event.event_id == "7c0a4c8c-1ad3-4fe4-b3a0-0d9b0f3ddf1e"
    assert (event.region, event.account, event.time) == (
        "eu-west-1",
        "123456789012",
        "2026-11-26T02:58:25Z",
    )
    assert event.body == body
    assert event.problem == ""


def test_pattern_covers_exactly_the_nine_detail_types() -> None:
    pattern = dict(EVENT_PATTERN)
    assert pattern == {
        "source": ["aws.ec2", "aws.autoscaling", "aws.health"],
        "detail-type": [
            "EC2 Spot Instance Interruption Warning",
            "EC2 Instance Rebalance Recommendation",
            "EC2 Spot Instance Request Fulfillment",
            "EC2 Instance State-change Notification",
            "EC2 Instance-terminate Lifecycle Action",
            "EC2 Capacity Reservation Instance Interruption Warning",
            "Capacity Block Expiration Warning",
            "Capacity Block Reservation Expiration Warning",
            "AWS Health Event",
        ],
    }
    assert list(DETAIL_TYPES) == pattern["detail-type"]


LIFECYCLE_DETAIL = {
    "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
    "AutoScalingGroupName": "web-asg",
    "LifecycleHookName": "drain",
    "EC2InstanceId": "i-0abc123def4567890",
    "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
    "NotificationMetadata": "extra",
    "Origin": "AutoScalingGroup",
    "Destination": "EC2",
}


def test_an_auto_scaling_termination_lifecycle_action_is_an_asg_termination() -> None:
    body = envelope("EC2 Instance-terminate Lifecycle Action", LIFECYCLE_DETAIL,
                    source="aws.autoscaling",
                    resources=["arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:"
                               "1a2b:autoScalingGroupName/web-asg"])
    event = parse_message(body)
    assert event.actionable and event.problem == ""
    assert (event.kind, event.action, event.instance_id) == (
        "asg-termination", "terminate", "i-0abc123def4567890")
    assert lifecycle_action(event) == LifecycleAction(
        "web-asg", "drain", "87654321-4321-4321-4321-210987654321", "i-0abc123def4567890")
    env = event_environment({"SPOTWATCH_ASG_NAME": "stale"}, event, {}, "/tmp/e.json")
    assert env["SPOTWATCH_EVENT"] == "asg-termination"
    assert env["SPOTWATCH_ASG_NAME"] == "web-asg"
    assert env["SPOTWATCH_ASG_LIFECYCLE_HOOK"] == "drain"
    assert env["SPOTWATCH_ASG_LIFECYCLE_TOKEN"] == "87654321-4321-4321-4321-210987654321"


def test_a_lifecycle_action_without_its_token_is_still_run_but_cannot_be_completed() -> None:
    detail = {k: v for k, v in LIFECYCLE_DETAIL.items() if k != "LifecycleActionToken"}
    event = parse_message(envelope("EC2 Instance-terminate Lifecycle Action", detail,
                                   source="aws.autoscaling"))
    assert event.actionable and "LifecycleActionToken" in event.problem
    assert lifecycle_action(event) is None
    # The same detail type from another source, and other kinds, carry no action.
    assert not parse_message(envelope("EC2 Instance-terminate Lifecycle Action",
                                      LIFECYCLE_DETAIL)).actionable
    other = parse_message(envelope("EC2 Instance Rebalance Recommendation",
                                   {"instance-id": "i-1"}))
    assert lifecycle_action(other) is None
    assert "SPOTWATCH_ASG_NAME" not in event_environment({"SPOTWATCH_ASG_NAME": "x"}, other, {}, "")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("not json {", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "JSON list"),
        ('"text"', "JSON str"),
        ('{"hello": "world"}', "no id, source, detail-type, detail"),
        ('{"id": "", "source": "aws.ec2", "detail-type": "x", "detail": {}}', "id"),
        ('{"id": "a", "source": "aws.ec2", "detail-type": "x", "detail": []}', "detail"),
        ('{"id": "a", "source": 3, "detail-type": "x", "detail": {}}', "source"),
    ],
)
def test_what_is_not_an_event_says_why(body: str, why: str) -> None:
    with pytest.raises(NotAnEvent) as caught:
        parse_message(body)
    assert why in caught.value.reason


def test_instance_id_falls_back_to_the_resources_arn() -> None:
    event = parse_message(envelope("EC2 Instance Rebalance Recommendation", {}))
    assert event.instance_id == "i-0abc123def4567890"
    assert event.problem == ""


def test_a_warning_missing_its_action_and_instance_is_still_acted_on() -> None:
    # Better a hook run with "unknown" than a missed interruption.
    event = parse_message(
        envelope("EC2 Spot Instance Interruption Warning", {}, resources=[])
    )
    assert event.actionable
    assert (event.instance_id, event.action) == ("unknown", "unknown")
    assert "no instance id" in event.problem and "no action" in event.problem


def test_other_event_types_and_sources_are_events_but_not_actionable() -> None:
    other_type = parse_message(envelope("EC2 AMI State Change", {"State": "available"}))
    assert not other_type.actionable and other_type.kind == ""
    other_source = parse_message(
        envelope("EC2 Spot Instance Interruption Warning",
                 {"instance-id": "i-1", "instance-action": "stop"}, source="my.app")
    )
    assert not other_source.actionable


def _event() -> FleetEvent:
    return parse_message(
        envelope("EC2 Spot Instance Interruption Warning",
                 {"instance-id": "i-0abc123def4567890", "instance-action": "terminate"})
    )


def test_hook_environment_sets_the_event_and_drops_stale_values() -> None:
    base = {
        "PATH": "/usr/bin",
        "SPOTWATCH_DEADLINE": "123",  # a `spotwatch run` variable: meaningless here
        "SPOTWATCH_EVENT": "stale",
        "SPOTWATCH_QUEUE_URL": "kept",
        "NOTIFY_SOCKET": "/run/systemd/notify",  # the watcher's, not the hooks'
    }
    env = event_environment(base, _event(), {"Name": "web-1", "team": "search"}, "/tmp/e.json")
    assert env["PATH"] == "/usr/bin"
    assert env["SPOTWATCH_QUEUE_URL"] == "kept"
    assert "SPOTWATCH_DEADLINE" not in env
    assert "NOTIFY_SOCKET" not in env
    assert env["SPOTWATCH_EVENT"] == "spot-interruption"
    assert env["SPOTWATCH_ACTION"] == "terminate"
    assert env["SPOTWATCH_INSTANCE_ID"] == "i-0abc123def4567890"
    assert env["SPOTWATCH_REGION"] == "eu-west-1"
    assert env["SPOTWATCH_EVENT_TIME"] == "2026-11-26T02:58:25Z"
    assert env["SPOTWATCH_EVENT_ID"] == "7c0a4c8c-1ad3-4fe4-b3a0-0d9b0f3ddf1e"
    assert env["SPOTWATCH_EVENT_JSON"] == "/tmp/e.json"
    assert env["SPOTWATCH_INSTANCE_NAME"] == "web-1"
    assert json.loads(env["SPOTWATCH_INSTANCE_TAGS_JSON"]) == {"Name": "web-1", "team": "search"}
    assert base["SPOTWATCH_EVENT"] == "stale"  # the caller's mapping is untouched


def test_line_and_record() -> None:
    event = _event()
    line = event_line(event, {"Name": "web-1"})
    assert line.split() == [
        "2026-11-26T02:58:25Z",
        "spot-interruption",
        "terminate",
        "i-0abc123def4567890",
        "(web-1)",
        "eu-west-1",
        "7c0a4c8c-1ad3-4fe4-b3a0-0d9b0f3ddf1e",
    ]
    assert "()" not in event_line(event, {})
    record = event_record(event, {})
    assert json.loads(json.dumps(record))["detail"]["instance-action"] == "terminate"
    assert record["name"] == "" and record["event"] == "spot-interruption"


def test_seen_events_forgets_the_oldest_first() -> None:
    seen = SeenEvents(capacity=3)
    for event_id in ("a", "b", "c"):
        seen.add(event_id)
    seen.add("a")  # touched: now the newest
    seen.add("d")
    assert "b" not in seen
    assert all(x in seen for x in ("a", "c", "d"))
    assert len(seen) == 3


def test_seen_events_by_default_covers_a_wave_of_ten_thousand_instances() -> None:
    # A rebalance recommendation, the warning and three state changes for each
    # instance: the wave's first event id is still known after its last.
    seen = SeenEvents()
    ids = [f"{n}-{kind}" for n in range(10000) for kind in ("rb", "warn", "st1", "st2", "st3")]
    for event_id in ids:
        seen.add(event_id)
    assert ids[0] in seen and len(seen) == 50000
    seen.add("one more")
    assert ids[0] not in seen and ids[1] in seen
@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1"),
        ("https://us-east-2.queue.amazonaws.com/123456789012/q", "us-east-2"),
        ("http://127.0.0.1:5000/123456789012/q", None),
    ],
)
def test_region_from_queue_url(url: str, region: str | None) -> None:
    assert region_from_queue_url(url) == region
