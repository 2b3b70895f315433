"""EventBridge envelopes of EC2 events, as plain data. Pure: no I/O, no boto3.

``EVENT_PATTERN`` is the one definition of what the fleet rule matches: ``fleet
setup`` puts it on the rule, and a test checks the CloudFormation template
carries the same. ``parse_message`` turns one SQS message body into a
``FleetEvent`` or raises ``NotAnEvent`` saying why it is not one.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotwatch.hook_env import hook_environment
from spotwatch.notice import (
    ASG_TERMINATION,
    REBALANCE_ACTION,
    REBALANCE_RECOMMENDATION,
    SPOT_INTERRUPTION,
)

EVENT_SOURCE = "aws.ec2"
AUTOSCALING_SOURCE = "aws.autoscaling"

INTERRUPTION_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
FULFILLMENT = "EC2 Spot Instance Request Fulfillment"
STATE_CHANGE = "EC2 Instance State-change Notification"
LIFECYCLE_ACTION = "EC2 Instance-terminate Lifecycle Action"  # from aws.autoscaling

DETAIL_TYPES = (INTERRUPTION_WARNING, REBALANCE, FULFILLMENT, STATE_CHANGE, LIFECYCLE_ACTION)

# SPOTWATCH_EVENT for each detail type; the first two match what `spotwatch run` sets.
SPOT_FULFILLMENT = "spot-fulfillment"
STATE_CHANGED = "state-change"
EVENT_KINDS: Mapping[str, str] = {
    INTERRUPTION_WARNING: SPOT_INTERRUPTION,
    REBALANCE: REBALANCE_RECOMMENDATION,
    FULFILLMENT: SPOT_FULFILLMENT,
    STATE_CHANGE: STATE_CHANGED,
    LIFECYCLE_ACTION: ASG_TERMINATION,
}
# The source each detail type must come from to be acted on.
EVENT_SOURCES: Mapping[str, str] = {
    **{detail_type: EVENT_SOURCE for detail_type in DETAIL_TYPES},
    LIFECYCLE_ACTION: AUTOSCALING_SOURCE,
}
FULFILLED_ACTION = "fulfilled"
TERMINATE_ACTION = "terminate"
UNKNOWN = "unknown"

# Both sources with all the detail types: no AWS service sends another's detail
# types, and a rule that matches the pair exactly needs "$or", which not every
# EventBridge implementation (or CloudFormation linter) knows.
EVENT_PATTERN: Mapping[str, Any] = {
    "source": [EVENT_SOURCE, AUTOSCALING_SOURCE],
    "detail-type": list(DETAIL_TYPES),
}

_INSTANCE_ARN = re.compile(r"^arn:[^:]+:ec2:[^:]*:[^:]*:instance/(i-[0-9a-zA-Z]+)$")
# Envelope members every EventBridge event carries.
_REQUIRED = ("id", "source", "detail-type", "detail")


class NotAnEvent(ValueError):
    """The message is not an EventBridge event; ``reason`` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FleetEvent:
    """One EventBridge event about an instance.

    ``kind`` is SPOTWATCH_EVENT (``spot-interruption``, ``rebalance-recommendation``,
    ``spot-fulfillment``, ``state-change``, ``asg-termination``; empty for a
    detail type spotwatch does not act on); ``action`` is SPOTWATCH_ACTION (the
    interruption's ``instance-action``, ``rebalance``, ``fulfilled``, the new
    instance state, or ``terminate`` for an Auto Scaling lifecycle action).
    ``body`` is the message body exactly as received.
    """

    event_id: str
    detail_type: str
    source: str
    kind: str
    action: str
    instance_id: str
    region: str
    account: str
    time: str
    detail: Mapping[str, Any] = field(hash=False, compare=False)
    body: str = field(repr=False, hash=False, compare=False)
    problem: str = ""  # what was missing from an otherwise usable event

    @property
    def actionable(self) -> bool:
        """True for the detail types spotwatch acts on."""
        return bool(self.kind)


@dataclass(frozen=True)
class LifecycleAction:
    """The Auto Scaling lifecycle action an ``asg-termination`` event waits on."""

    group: str
    hook: str
    token: str
    instance_id: str


def lifecycle_action(event: FleetEvent) -> LifecycleAction | None:
    """The lifecycle action to complete once the hooks succeeded; None for other
    events, or when the event lacks the group, the hook name or the token."""
    if event.kind != ASG_TERMINATION:
        return None
    group, hook, token = (_text(event.detail.get(k)) for k in
                          ("AutoScalingGroupName", "LifecycleHookName", "LifecycleActionToken"))
    if not (group and hook and token):
        return None
    return LifecycleAction(group, hook, token, event.instance_id)


def parse_message(body: str) -> FleetEvent:
    """The event in an SQS message body sent by an EventBridge rule.

    Raises NotAnEvent for a body that is not JSON, not an object, or lacks the
    envelope members (id, source, detail-type, detail). Missing details of a
    known type (an instance id, an action) are not fatal: better a hook run
    with ``unknown`` than a missed interruption; ``problem`` says what was missing.
    """
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise NotAnEvent(f"body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise NotAnEvent(f"body is JSON {type(data).__name__}, not an EventBridge event object")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise NotAnEvent(f"not an EventBridge event: no {', '.join(missing)}")
    event_id, source, detail_type, detail = (data[k] for k in _REQUIRED)
    if not isinstance(event_id, str) or not event_id:
        raise NotAnEvent("not an EventBridge event: id is not a non-empty string")
    if not isinstance(source, str) or not isinstance(detail_type, str):
        raise NotAnEvent("not an EventBridge event: source or detail-type is not a string")
    if not isinstance(detail, dict):
        raise NotAnEvent("not an EventBridge event: detail is not an object")

    problems: list[str] = []
    instance_id = _instance_id(detail, data.get("resources"))
    if not instance_id:
        problems.append("no instance id")
        instance_id = UNKNOWN
    kind = EVENT_KINDS.get(detail_type, "") if source == EVENT_SOURCES.get(detail_type) else ""
    action = _action(detail_type, detail)
    if kind and not action:
        problems.append("no action")
        action = UNKNOWN
    if kind == ASG_TERMINATION:
        missing = [k for k in ("AutoScalingGroupName", "LifecycleHookName", "LifecycleActionToken")
                   if not _text(detail.get(k))]
        if missing:
            problems.append(f"no {', '.join(missing)}: the lifecycle action cannot be completed")
    return FleetEvent(
        event_id=event_id,
        detail_type=detail_type,
        source=source,
        kind=kind,
        action=action,
        instance_id=instance_id,
        region=_text(data.get("region")) or UNKNOWN,
        account=_text(data.get("account")) or UNKNOWN,
        time=_text(data.get("time")),
        detail=detail,
        body=body,
        problem="; ".join(problems),
    )


def _instance_id(detail: Mapping[str, Any], resources: Any) -> str:
    value = _text(detail.get("instance-id")) or _text(detail.get("EC2InstanceId"))
    if value:
        return value
    if isinstance(resources, list):
        for resource in resources:
            match = _INSTANCE_ARN.match(_text(resource))
            if match:
                return match.group(1)
    return ""


def _action(detail_type: str, detail: Mapping[str, Any]) -> str:
    if detail_type == INTERRUPTION_WARNING:
        return _text(detail.get("instance-action"))
    if detail_type == REBALANCE:
        return REBALANCE_ACTION
    if detail_type == FULFILLMENT:
        return FULFILLED_ACTION
    if detail_type == STATE_CHANGE:
        return _text(detail.get("state"))
    if detail_type == LIFECYCLE_ACTION:
        return TERMINATE_ACTION
    return ""


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


# -- what hooks and people see ------------------------------------------------

# Variables a fleet hook gets; stale values inherited from the watcher's own
# environment (or left by `spotwatch run` names) are dropped before setting them.
FLEET_VARIABLES = frozenset(
    {
        "SPOTWATCH_EVENT",
        "SPOTWATCH_ACTION",
        "SPOTWATCH_INSTANCE_ID",
        "SPOTWATCH_REGION",
        "SPOTWATCH_EVENT_TIME",
        "SPOTWATCH_EVENT_ID",
        "SPOTWATCH_EVENT_JSON",
        "SPOTWATCH_DETAIL_TYPE",
        "SPOTWATCH_ACCOUNT",
        "SPOTWATCH_INSTANCE_NAME",
        "SPOTWATCH_INSTANCE_TAGS_JSON",
        "SPOTWATCH_ASG_NAME",
        "SPOTWATCH_ASG_LIFECYCLE_HOOK",
        "SPOTWATCH_ASG_LIFECYCLE_TOKEN",
        # set by `spotwatch run` or the runner; meaningless or stale here
        "SPOTWATCH_HOOK_DEADLINE",
        "SPOTWATCH_NOTICE_TIME",
        "SPOTWATCH_DEADLINE",
        "SPOTWATCH_SECONDS_LEFT",
        "SPOTWATCH_NOTICE_ID",
        "SPOTWATCH_INSTANCE_TYPE",
        "SPOTWATCH_AZ",
        "SPOTWATCH_DRILL",
    }
)


def event_environment(
    base_env: Mapping[str, str],
    event: FleetEvent,
    tags: Mapping[str, str],
    event_json_path: str,
) -> dict[str, str]:
    """``base_env`` plus the SPOTWATCH_* variables that describe ``event``."""
    variables = {
        "SPOTWATCH_EVENT": event.kind,
        "SPOTWATCH_ACTION": event.action,
        "SPOTWATCH_INSTANCE_ID": event.instance_id,
        "SPOTWATCH_REGION": event.region,
        "SPOTWATCH_EVENT_TIME": event.time,
        "SPOTWATCH_EVENT_ID": event.event_id,
        "SPOTWATCH_EVENT_JSON": event_json_path,
        "SPOTWATCH_DETAIL_TYPE": event.detail_type,
        "SPOTWATCH_ACCOUNT": event.account,
        "SPOTWATCH_INSTANCE_NAME": tags.get("Name", ""),
        "SPOTWATCH_INSTANCE_TAGS_JSON": json.dumps(dict(tags), sort_keys=True),
    }
    if event.kind == ASG_TERMINATION:
        variables["SPOTWATCH_ASG_NAME"] = _text(event.detail.get("AutoScalingGroupName"))
        variables["SPOTWATCH_ASG_LIFECYCLE_HOOK"] = _text(event.detail.get("LifecycleHookName"))
        variables["SPOTWATCH_ASG_LIFECYCLE_TOKEN"] = _text(
            event.detail.get("LifecycleActionToken")
        )
    return hook_environment(base_env, variables, FLEET_VARIABLES)


def event_line(event: FleetEvent, tags: Mapping[str, str]) -> str:
    """One line for people: time, kind, action, instance (Name), region, event id."""
    name = tags.get("Name", "")
    instance = f"{event.instance_id} ({name})" if name else event.instance_id
    return "  ".join(
        (event.time or "-", event.kind, event.action, instance, event.region, event.event_id)
    )


def event_record(event: FleetEvent, tags: Mapping[str, str]) -> dict[str, Any]:
    """One JSON line's worth for machines."""
    return {
        "event_id": event.event_id,
        "event": event.kind,
        "action": event.action,
        "instance_id": event.instance_id,
        "name": tags.get("Name", ""),
        "region": event.region,
        "account": event.account,
        "time": event.time,
        "detail_type": event.detail_type,
        "tags": dict(tags),
        "detail": dict(event.detail),
        "problem": event.problem,
    }


class SeenEvents:
    """The ids of events already acted on: a bounded LRU, oldest forgotten first.

    EventBridge delivers at least once, so one event can arrive as two SQS
    messages; the watcher records an id only once its hooks succeeded.
    """

    def __init__(self, capacity: int = 10000) -> None:
        self._capacity = max(1, capacity)
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
