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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
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
HEALTH_SOURCE = "aws.health"

INTERRUPTION_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
FULFILLMENT = "EC2 Spot Instance Request Fulfillment"
STATE_CHANGE = "EC2 Instance State-change Notification"
LIFECYCLE_ACTION = "EC2 Instance-terminate Lifecycle Action"  # from aws.autoscaling
RESERVATION_INTERRUPTION = "EC2 Capacity Reservation Instance Interruption Warning"
# AWS's documentation spells the capacity block warning both ways.
BLOCK_EXPIRATION = "Capacity Block Expiration Warning"
BLOCK_RESERVATION_EXPIRATION = "Capacity Block Reservation Expiration Warning"
HEALTH_EVENT = "AWS Health Event"  # from aws.health; only EC2 scheduledChange is acted on

DETAIL_TYPES = (INTERRUPTION_WARNING, REBALANCE, FULFILLMENT, STATE_CHANGE, LIFECYCLE_ACTION,
                RESERVATION_INTERRUPTION, BLOCK_EXPIRATION, BLOCK_RESERVATION_EXPIRATION,
                HEALTH_EVENT)

# SPOTWATCH_EVENT for each detail type; the first two match what `spotwatch run` sets.
SPOT_FULFILLMENT = "spot-fulfillment"
STATE_CHANGED = "state-change"
CAPACITY_RESERVATION_INTERRUPTION = "capacity-reservation-interruption"
CAPACITY_BLOCK_EXPIRATION = "capacity-block-expiration"
SCHEDULED_CHANGE = "scheduled-change"
EVENT_KINDS: Mapping[str, str] = {
    INTERRUPTION_WARNING: SPOT_INTERRUPTION,
    REBALANCE: REBALANCE_RECOMMENDATION,
    FULFILLMENT: SPOT_FULFILLMENT,
    STATE_CHANGE: STATE_CHANGED,
    LIFECYCLE_ACTION: ASG_TERMINATION,
    RESERVATION_INTERRUPTION: CAPACITY_RESERVATION_INTERRUPTION,
    BLOCK_EXPIRATION: CAPACITY_BLOCK_EXPIRATION,
    BLOCK_RESERVATION_EXPIRATION: CAPACITY_BLOCK_EXPIRATION,
    HEALTH_EVENT: SCHEDULED_CHANGE,
}
# The source each detail type must come from to be acted on.
EVENT_SOURCES: Mapping[str, str] = {
    **{detail_type: EVENT_SOURCE for detail_type in DETAIL_TYPES},
    LIFECYCLE_ACTION: AUTOSCALING_SOURCE,
    HEALTH_EVENT: HEALTH_SOURCE,
}
HEALTH_SERVICE = "EC2"
HEALTH_CATEGORY = "scheduledChange"
RESERVATION_NOTICE = 120.0  # seconds an interruptible Capacity Reservation's instances get
# Instances in an ending Capacity Block are terminated from this long before its end.
BLOCK_TERMINATION_LEAD = 30 * 60.0
FULFILLED_ACTION = "fulfilled"
TERMINATE_ACTION = "terminate"
UNKNOWN = "unknown"

# All sources with all the detail types: no AWS service sends another's detail
# types, and a rule that matches each pair exactly needs "$or", which not every
# EventBridge implementation (or CloudFormation linter) knows. For the same
# reason the rule cannot narrow AWS Health events to EC2 scheduled changes:
# parse_message does, and the watcher deletes the rest as ignored.
EVENT_PATTERN: Mapping[str, Any] = {
    "source": [EVENT_SOURCE, AUTOSCALING_SOURCE, HEALTH_SOURCE],
    "detail-type": list(DETAIL_TYPES),
}

_INSTANCE_ARN = re.compile(r"^arn:[^:]+:ec2:[^:]*:[^:]*:instance/(i-[0-9a-zA-Z]+)$")
_INSTANCE_ID = re.compile(r"^i-[0-9a-zA-Z]+$")
_RESERVATION_ARN = re.compile(
    r"^arn:[^:]+:ec2:[^:]*:[^:]*:capacity-reservation/(cr-[0-9a-zA-Z]+)$")
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
    ``spot-fulfillment``, ``state-change``, ``asg-termination``,
    ``capacity-reservation-interruption``, ``capacity-block-expiration``,
    ``scheduled-change``; empty for a detail type spotwatch does not act on);
    ``action`` is SPOTWATCH_ACTION (the interruption's ``instance-action``,
    ``rebalance``, ``fulfilled``, the new instance state, ``terminate`` for an
    Auto Scaling lifecycle action or a capacity block, the Health event's
    ``eventTypeCode``).
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
    # Every instance the event names (a Health event may name many; a capacity
    # block warning, none); instance_id is the first, or "unknown".
    instance_ids: tuple[str, ...] = ()
    capacity_reservation_id: str = ""
    deadline: float | None = None  # epoch seconds the instances end by, when the event says

    @property
    def actionable(self) -> bool:
        """True for the detail types spotwatch acts on."""
        return bool(self.kind)

    @property
    def per_instance(self) -> bool:
        """True when the hooks run once for each instance named (a Health event)."""
        return self.kind == SCHEDULED_CHANGE and len(self.instance_ids) > 1

    def runs(self) -> tuple[FleetEvent, ...]:
        """The hook runs this event asks for: one per named instance for a Health
        event, in the order it names them; otherwise the event itself."""
        if not self.per_instance:
            return (self,)
        return tuple(replace(self, instance_id=i) for i in self.instance_ids)

    def log_fields(self) -> dict[str, Any]:
        """The ``fleet.event`` log line's fields for this event."""
        fields: dict[str, Any] = {
            "kind": self.kind, "action": self.action, "instance_id": self.instance_id,
            "region": self.region, "event_time": self.time}
        if self.capacity_reservation_id:
            fields["capacity_reservation_id"] = self.capacity_reservation_id
        if self.deadline is not None:
            fields["deadline"] = int(self.deadline)
        if self.problem:
            fields["problem"] = self.problem
        return fields


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
    resources = data.get("resources")
    kind = EVENT_KINDS.get(detail_type, "") if source == EVENT_SOURCES.get(detail_type) else ""
    if kind == SCHEDULED_CHANGE and not (
            _text(detail.get("service")) == HEALTH_SERVICE
            and _text(detail.get("eventTypeCategory")) == HEALTH_CATEGORY):
        kind = ""  # another service's, or an issue or notice: not an instance ending
    reservation = ""
    if kind == SCHEDULED_CHANGE:
        instance_ids = _health_instances(detail, resources)
    elif kind == CAPACITY_BLOCK_EXPIRATION:
        reservation = _reservation_id(detail, resources)
        if not reservation:
            problems.append("no capacity-reservation-id")
        instance_ids = _named_instances(detail, resources)
    else:
        one = _instance_id(detail, resources)
        instance_ids = (one,) if one else ()
    instance_id = instance_ids[0] if instance_ids else ""
    if not instance_id:
        if kind != CAPACITY_BLOCK_EXPIRATION:  # it names the reservation, not instances
            problems.append("no instance id")
        instance_id = UNKNOWN
    action = _action(detail_type, detail)
    if kind and not action:
        problems.append("no action")
        action = UNKNOWN
    if kind == ASG_TERMINATION:
        missing = [k for k in ("AutoScalingGroupName", "LifecycleHookName", "LifecycleActionToken")
                   if not _text(detail.get(k))]
        if missing:
            problems.append(f"no {', '.join(missing)}: the lifecycle action cannot be completed")
    deadline = _deadline(kind, detail, _text(data.get("time")))
    if kind in _DEADLINE_FIELD and deadline is None:
        problems.append(f"no usable {_DEADLINE_FIELD[kind]}: no deadline")
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
        instance_ids=instance_ids,
        capacity_reservation_id=reservation,
        deadline=deadline,
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


def _named_instances(detail: Mapping[str, Any], resources: Any) -> tuple[str, ...]:
    """Instance ids in ``detail.instance-id``/``instance-ids`` and instance ARNs in
    ``resources``, first seen first, each once."""
    found: list[str] = []
    listed = detail.get("instance-ids")
    for value in [detail.get("instance-id"), *(listed if isinstance(listed, list) else [])]:
        if _INSTANCE_ID.match(_text(value)):
            found.append(_text(value))
    if isinstance(resources, list):
        for resource in resources:
            match = _INSTANCE_ARN.match(_text(resource))
            if match:
                found.append(match.group(1))
    return tuple(dict.fromkeys(found))


def _health_instances(detail: Mapping[str, Any], resources: Any) -> tuple[str, ...]:
    """A Health event's instances: ``detail.affectedEntities[].entityValue``, else
    its ``resources`` (plain instance ids there), in the order given, each once."""
    found: list[str] = []
    entities = detail.get("affectedEntities")
    if isinstance(entities, list):
        for entity in entities:
            value = _text(entity.get("entityValue")) if isinstance(entity, dict) else ""
            if _INSTANCE_ID.match(value):
                found.append(value)
    if not found and isinstance(resources, list):
        for resource in resources:
            value = _text(resource)
            match = _INSTANCE_ARN.match(value)
            if match or _INSTANCE_ID.match(value):
                found.append(match.group(1) if match else value)
    return tuple(dict.fromkeys(found))


def _reservation_id(detail: Mapping[str, Any], resources: Any) -> str:
    value = _text(detail.get("capacity-reservation-id"))
    if value:
        return value
    if isinstance(resources, list):
        for resource in resources:
            match = _RESERVATION_ARN.match(_text(resource))
            if match:
                return match.group(1)
    return ""


# The field each kind's deadline comes from (for the problem note when it is missing).
_DEADLINE_FIELD: Mapping[str, str] = {
    CAPACITY_RESERVATION_INTERRUPTION: "instance-termination-time or time",
    CAPACITY_BLOCK_EXPIRATION: "end-date",
    SCHEDULED_CHANGE: "startTime",
}


def _deadline(kind: str, detail: Mapping[str, Any], time: str) -> float | None:
    """When the instances end, in epoch seconds: the interruptible reservation's
    termination time (else two minutes after the event); the capacity block's
    end-date less the 30 minutes before it when termination starts; the Health
    event's startTime. None for other kinds, or when the time is unreadable."""
    if kind == CAPACITY_RESERVATION_INTERRUPTION:
        at = parse_time(_text(detail.get("instance-termination-time")))
        if at is not None:
            return at
        sent = parse_time(time)
        return None if sent is None else sent + RESERVATION_NOTICE
    if kind == CAPACITY_BLOCK_EXPIRATION:
        end = parse_time(_text(detail.get("end-date")))
        return None if end is None else end - BLOCK_TERMINATION_LEAD
    if kind == SCHEDULED_CHANGE:
        return parse_time(_text(detail.get("startTime")))
    return None


def parse_time(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 / RFC 3339 time (``2026-12-05T10:00:00Z``) or an
    RFC 1123 one (``Sat, 05 Dec 2026 10:00:00 GMT``, as Health events write it);
    None when it is neither. A time without a zone is taken as UTC."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if parsed is None:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


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
    if detail_type == RESERVATION_INTERRUPTION:
        return _text(detail.get("instance-action"))
    if detail_type in (BLOCK_EXPIRATION, BLOCK_RESERVATION_EXPIRATION):
        return TERMINATE_ACTION  # its instances are terminated as the block ends
    if detail_type == HEALTH_EVENT:
        return _text(detail.get("eventTypeCode"))  # e.g. AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED
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
        "SPOTWATCH_CAPACITY_RESERVATION_ID",
        "SPOTWATCH_INSTANCE_IDS",
        "SPOTWATCH_DEADLINE",  # set when the event carries its own deadline
        # set by `spotwatch run` or the runner; meaningless or stale here
        "SPOTWATCH_HOOK_DEADLINE",
        "SPOTWATCH_NOTICE_TIME",
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
    if event.deadline is not None:  # epoch seconds, as `spotwatch run` sets it
        variables["SPOTWATCH_DEADLINE"] = str(int(event.deadline))
    if event.kind == CAPACITY_BLOCK_EXPIRATION:
        variables["SPOTWATCH_CAPACITY_RESERVATION_ID"] = event.capacity_reservation_id
        variables["SPOTWATCH_INSTANCE_IDS"] = " ".join(event.instance_ids)
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
        **({"capacity_reservation_id": event.capacity_reservation_id}
           if event.kind == CAPACITY_BLOCK_EXPIRATION else {}),
        **({"deadline": int(event.deadline)} if event.deadline is not None else {}),
    }


# Event ids a watcher remembers: a wave of 10,000 instances sends a rebalance
# recommendation, the warning and state changes for each, and a repeat of the
# wave's first event must still be known at its end. About 9 MiB when full.
SEEN_EVENTS = 50000


class SeenEvents:
    """The ids of events already acted on: a bounded LRU, oldest forgotten first.

    EventBridge delivers at least once, so one event can arrive as two SQS
    messages; the watcher records an id only once its hooks succeeded.
    """

    def __init__(self, capacity: int = SEEN_EVENTS) -> None:
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
