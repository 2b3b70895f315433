"""What a spot request's bid status means: its class, plain words, urgency, exit status.

Pure functions over plain data; the codes are AWS's Spot request status codes,
each in the class the README's ``spotwatch status`` section names. The codes
for an instance ended by its owner or its schedule (not interruptions) get the
class ``ended`` so that an operator's own terminations do not read as "unknown".
Any other code is shown as it is, with the class ``unknown``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

# Classes, most urgent first: this order is the table's order.
INTERRUPTING = "interrupting"  # an interruption is under way
INTERRUPTED = "interrupted"
FAILED = "failed"
UNKNOWN = "unknown"
WAITING = "waiting"
HEALTHY = "healthy"
ENDED = "ended"  # ended by its owner or its schedule: not an interruption
CLASSES = (INTERRUPTING, INTERRUPTED, FAILED, UNKNOWN, WAITING, HEALTHY, ENDED)

# Exit statuses of `spotwatch status`.
EXIT_OK = 0
EXIT_INTERRUPTING = 1
EXIT_INTERRUPTED = 2
EXIT_API = 3

# DescribeSpotInstanceRequests' request states (the --state filter).
REQUEST_STATES = ("open", "active", "closed", "cancelled", "failed", "disabled")

# Capacity reclaims skip marked-for-termination: this code arrives with the
# two-minute notice while the instance still runs, so its state decides.
NO_CAPACITY_TERMINATION = "instance-terminated-no-capacity"
# DescribeInstances states in which that instance has not stopped running yet.
LIVE_INSTANCE_STATES = ("pending", "running")
# instance_state when DescribeInstances no longer knows the instance.
INSTANCE_GONE = "gone"

_CODES: dict[str, tuple[str, str]] = {
    # An interruption is under way.
    "marked-for-termination": (INTERRUPTING, "interrupting: AWS terminates it within 2 min"),
    "marked-for-stop": (INTERRUPTING, "interrupting: AWS stops it within 2 min"),
    "marked-for-stop-by-experiment": (
        INTERRUPTING, "interrupting: a fault-injection test stops it"),
    # Interrupted.
    "instance-terminated-by-price": (INTERRUPTED, "interrupted: price over your max; terminated"),
    "instance-terminated-by-service": (INTERRUPTED, "interrupted: terminated by AWS"),
    NO_CAPACITY_TERMINATION: (INTERRUPTED, "interrupted: capacity reclaimed; terminated"),
    "instance-stopped-by-price": (INTERRUPTED, "interrupted: price over your max; stopped"),
    "instance-stopped-no-capacity": (INTERRUPTED, "interrupted: capacity reclaimed; stopped"),
    "instance-terminated-by-experiment": (
        INTERRUPTED, "interrupted: terminated by a fault-injection test"),
    "instance-stopped-by-experiment": (
        INTERRUPTED, "interrupted: stopped by a fault-injection test"),
    "instance-terminated-launch-group-constraint": (
        INTERRUPTED, "interrupted: its launch group was terminated"),
    # Healthy.
    "fulfilled": (HEALTHY, "healthy: running"),
    "request-canceled-and-instance-running": (
        HEALTHY, "healthy: request canceled, instance runs on"),
    # Waiting.
    "pending-evaluation": (WAITING, "waiting: AWS is evaluating the request"),
    "pending-fulfillment": (WAITING, "waiting: AWS is launching the instance"),
    "capacity-not-available": (WAITING, "waiting: no spare capacity yet"),
    "price-too-low": (WAITING, "waiting: your max price is below the Spot price"),
    "not-scheduled-yet": (WAITING, "waiting: its start date has not come"),
    "launch-group-constraint": (WAITING, "waiting: its launch group cannot start together yet"),
    "az-group-constraint": (WAITING, "waiting: cannot fit all in one zone yet"),
    "placement-group-constraint": (WAITING, "waiting: no room in the placement group yet"),
    # Failed.
    "bad-parameters": (FAILED, "failed: invalid request parameters"),
    "system-error": (FAILED, "failed: AWS system error; submit it again"),
    "schedule-expired": (FAILED, "failed: expired before it was fulfilled"),
    "canceled-before-fulfillment": (FAILED, "failed: canceled before it was fulfilled"),
    "constraint-not-fulfillable": (FAILED, "failed: its constraints can never be met"),
    "limit-exceeded": (FAILED, "failed: a Spot Instance or vCPU limit was reached"),
    # Ended by the owner or the request's schedule: not an interruption (see above).
    "instance-terminated-by-user": (ENDED, "ended: you terminated the instance"),
    "spot-instance-terminated-by-user": (ENDED, "ended: you terminated the instance"),
    "instance-stopped-by-user": (ENDED, "ended: you stopped the instance"),
    "instance-terminated-by-schedule": (ENDED, "ended: its end date passed; terminated"),
}

_RECLAIM_UNDER_WAY = "interrupting: capacity reclaimed, ends within 2 min"
_GROUP_CONSTRAINT = "waiting: a group constraint is not met yet"
_UNKNOWN = "unknown code: read the message"
_NO_CODE = "unknown: no status code"


@dataclass(frozen=True)
class SpotRequest:
    """One spot instance request as DescribeSpotInstanceRequests reported it.

    ``updated`` is ``Status.UpdateTime`` in UTC. ``instance_state`` is the
    instance's DescribeInstances state, looked up only for codes that need it
    (None otherwise; ``"gone"`` when EC2 no longer knows the instance).
    """

    request_id: str
    region: str
    state: str
    status_code: str
    status_message: str = ""
    updated: datetime | None = None
    instance_id: str | None = None
    instance_state: str | None = None


@dataclass(frozen=True)
class Assessment:
    """The class of a status code and what it means, in plain words."""

    category: str
    meaning: str


def needs_instance_state(code: str) -> bool:
    """True when ``code`` means different things depending on the instance's state."""
    return code == NO_CAPACITY_TERMINATION


def assess(code: str, instance_state: str | None = None) -> Assessment:
    """Classify one status code; ``instance_state`` matters only where
    :func:`needs_instance_state` says so."""
    if code == NO_CAPACITY_TERMINATION and instance_state in LIVE_INSTANCE_STATES:
        return Assessment(INTERRUPTING, _RECLAIM_UNDER_WAY)
    known = _CODES.get(code)
    if known is not None:
        return Assessment(*known)
    if code.endswith("-group-constraint"):
        return Assessment(WAITING, _GROUP_CONSTRAINT)
    return Assessment(UNKNOWN, _UNKNOWN if code else _NO_CODE)


def assess_request(request: SpotRequest) -> Assessment:
    """:func:`assess` for one request."""
    return assess(request.status_code, request.instance_state)


def urgency(category: str) -> int:
    """Sort key: 0 for the most urgent class."""
    try:
        return CLASSES.index(category)
    except ValueError:
        return CLASSES.index(UNKNOWN)


_EXIT_BY_CLASS = {
    INTERRUPTING: EXIT_INTERRUPTING,
    INTERRUPTED: EXIT_INTERRUPTED,
    FAILED: EXIT_INTERRUPTED,
    UNKNOWN: EXIT_API,
}


def exit_status(categories: Iterable[str]) -> int:
    """The exit status for a set of classes: that of the most urgent one.

    An interruption under way (1) outranks interrupted or failed (2), which
    outrank an unknown code (3); waiting, healthy and ended are 0.
    """
    ranked = sorted(categories, key=urgency)
    if not ranked:
        return EXIT_OK
    return _EXIT_BY_CLASS.get(ranked[0], EXIT_OK)


def known_codes() -> dict[str, str]:
    """Every status code spotwatch knows, mapped to its class."""
    return {code: category for code, (category, _) in _CODES.items()}
