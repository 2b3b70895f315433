"""Google's ``instance/upcoming-maintenance``: host maintenance announced days ahead.

Part of the ``maintenance`` source on Google, planned exactly like AWS scheduled
events (``maintenance.MaintenanceMonitor``): read about once a minute with
``?alt=json``, the hooks start ``--maintenance-lead`` seconds before
``window_start_time``, and the value is read again just before they do, so a
window moved since (a new ``window_start_time``: a new plan, a new notice id) or
completed (``maintenance_status`` ``COMPLETE``, or gone) is honoured.

A 404, ``NONE``, an empty answer or an error object ("no notifications have been
received yet") mean no maintenance. The notice ends the instance when the VM's
host maintenance policy (``instance/scheduling/on-host-maintenance``, read once)
is ``TERMINATE``, as it always is for Spot VMs: the ``maintenance-event`` flip 60 s
before then folds into the same end. With ``MIGRATE`` the VM lives on; that
window is a ``migrate`` notice, watched only with the ``migrate`` source, as for
``maintenance-event``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from spotwatch.clouds.gcp import GceMetadata
from spotwatch.imds import ImdsError
from spotwatch.maintenance import REFRESH_SECONDS, MaintenanceEvent, MaintenanceMonitor
from spotwatch.monitors import parse_time

UPCOMING = "instance/upcoming-maintenance"
ON_HOST_MAINTENANCE = "instance/scheduling/on-host-maintenance"
SOURCE_UPCOMING = "gce:" + UPCOMING
MONITOR_NAME = "upcoming-maintenance"
EVENT_ID = "upcoming-maintenance"
STATUSES = ("PENDING", "ONGOING", "COMPLETE")


@dataclass(frozen=True)
class Upcoming:
    """One ``upcoming-maintenance`` answer (times as given and as epoch seconds)."""

    window_start: float
    raw_window_start: str
    status: str = "PENDING"
    type: str = ""
    window_end: float | None = None
    raw_window_end: str = ""
    raw_latest_start: str = ""
    can_reschedule: bool | None = None
    reasons: tuple[str, ...] = ()


def _text(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    return value.strip() if isinstance(value, str) else ""


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def parse_upcoming(text: str) -> tuple[Upcoming | None, str]:
    """(the announced maintenance or None, what was odd) from an ``alt=json`` answer. Pure.

    Nothing announced: empty, ``NONE``, ``{}`` or an error object. An object with no
    usable ``window_start_time`` is none too, with the reason as the problem.
    """
    body = text.strip()
    if not body or body.strip('"').upper() == "NONE":
        return None, ""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        return None, f"not valid JSON: {body[:80]!r}"
    if not isinstance(doc, dict):
        return None, f"not a JSON object: {body[:80]!r}"
    raw_start = _text(doc, "window_start_time")
    if not doc or ("error" in doc and not raw_start):
        return None, ""  # e.g. {"error": "no notifications have been received yet, ..."}
    start = parse_time(raw_start) if raw_start else None
    if start is None:
        return None, f"no usable window_start_time: {body[:120]!r}"
    raw_end = _text(doc, "window_end_time")
    given = doc.get("maintenance_reasons")
    listed = [given] if isinstance(given, str) else given if isinstance(given, list) else []
    status = _text(doc, "maintenance_status").upper() or "PENDING"
    return Upcoming(
        window_start=start,
        raw_window_start=raw_start,
        status=status,
        type=_text(doc, "type"),
        window_end=parse_time(raw_end) if raw_end else None,
        raw_window_end=raw_end,
        raw_latest_start=_text(doc, "latest_window_start_time"),
        can_reschedule=_flag(doc.get("can_reschedule")),
        reasons=tuple(r for r in listed if isinstance(r, str)),
    ), ("" if status in STATUSES else f"unknown maintenance_status {status!r}")


def hook_env(up: Upcoming) -> tuple[tuple[str, str], ...]:
    """The SPOTWATCH_MAINTENANCE_* variables for the hooks. Pure."""
    flag = "" if up.can_reschedule is None else str(up.can_reschedule).lower()
    return (
        ("SPOTWATCH_MAINTENANCE_WINDOW_START", up.raw_window_start),
        ("SPOTWATCH_MAINTENANCE_WINDOW_END", up.raw_window_end),
        ("SPOTWATCH_MAINTENANCE_LATEST_WINDOW_START", up.raw_latest_start),
        ("SPOTWATCH_MAINTENANCE_TYPE", up.type),
        ("SPOTWATCH_MAINTENANCE_REASONS", ",".join(up.reasons)),
        ("SPOTWATCH_MAINTENANCE_CAN_RESCHEDULE", flag),
        ("SPOTWATCH_MAINTENANCE_STATUS", up.status),
    )


def action_for(policy: str, migrate: bool) -> str | None:
    """The notice's action under the host maintenance ``policy``: ``terminate`` (also
    when the policy is unknown: better the hooks), ``migrate`` if watched, else None."""
    if policy.strip().upper() == "MIGRATE":
        return "migrate" if migrate else None
    return "terminate"


def as_event(up: Upcoming, action: str) -> MaintenanceEvent:
    """``up`` as a planned maintenance event (completed: not run). Pure."""
    return MaintenanceEvent(
        event_id=EVENT_ID,
        code=action,
        state="completed" if up.status == "COMPLETE" else "active",
        not_before=up.window_start,
        raw_not_before=up.raw_window_start,
        not_after=up.window_end,
        description=up.type,
        ending=action == "terminate",
        source=SOURCE_UPCOMING,
        env=hook_env(up),
    )


class UpcomingMaintenanceMonitor(MaintenanceMonitor):
    """``MaintenanceMonitor`` over Google's ``upcoming-maintenance`` (one event at most)."""

    name = MONITOR_NAME
    source = SOURCE_UPCOMING

    def __init__(
        self,
        client: GceMetadata,
        *,
        lead: float,
        migrate: bool = False,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = REFRESH_SECONDS,
    ) -> None:
        super().__init__(None, lead=lead, wall_clock=wall_clock, clock=clock, refresh=refresh)
        self._gce = client
        self._migrate = migrate
        self._policy: str | None = None

    def _fetch(self) -> tuple[list[MaintenanceEvent], str]:
        text = self._gce.get_if_present(UPCOMING, {"alt": "json"})
        up, problem = parse_upcoming(text or "")
        if up is None:
            return [], problem
        action = action_for(self._host_policy(), self._migrate)
        return ([] if action is None else [as_event(up, action)]), problem

    def _host_policy(self) -> str:
        if self._policy is None:
            try:
                self._policy = self._gce.get_if_present(ON_HOST_MAINTENANCE, {}) or ""
            except ImdsError:
                return ""  # unknown this time (terminate); asked again at the next read
        return self._policy

    def close(self) -> None:
        self._gce.close()
