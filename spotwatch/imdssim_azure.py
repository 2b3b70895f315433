"""An Azure Instance Metadata Service simulator (Scheduled Events) on 127.0.0.1.

``Metadata: true`` is required (400 without); ``api-version`` too. The events
document carries ``DocumentIncarnation``, bumped on every change; events name
the VMs they affect in ``Resources`` (this VM or another in the availability
set); ``StartRequests`` POSTs are recorded and move the event to ``Started``;
``first_answer_delay`` holds the first GET as the real service does while it
turns on. Faults: see ``simserver.FAULTS``.

Both Scheduled Events versions spotwatch speaks are served: ``2024-07-09``
(with ``SpotRebalanceRecommendation``) and ``2020-07-01`` (which leaves that
event type out). ``versions`` narrows what is accepted, to stand for an older
service: any other ``api-version`` is refused with ``refuse_status`` (400, as
Azure answers an unknown version, or 404).

    with AzureSimulator() as sim:
        eid = sim.add_event("Preempt", at=time.time() + 2)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from spotwatch.simserver import Reply, SimBase

EVENTS_PATH = "/metadata/scheduledevents"
COMPUTE_PATH = "/metadata/instance/compute"
NEW_API = "2024-07-09"
OLD_API = "2020-07-01"
REBALANCE = "SpotRebalanceRecommendation"
# The newest versions a real service lists when it refuses one.
_NEWEST = ["2024-07-09", "2024-03-15", "2023-07-01"]

DEFAULT_COMPUTE: dict[str, Any] = {
    "name": "spot-vm-1",
    "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
    "vmSize": "Standard_D2s_v3",
    "location": "westeurope",
    "zone": "1",
    "subscriptionId": "8d10da13-8125-4ba9-a717-bf7490507b3d",
    "priority": "Spot",
}


def rfc1123(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


@dataclass
class _Event:
    event_id: str
    event_type: str
    resources: list[str]
    status: str
    not_before: str
    visible_at: float
    source: str = "Platform"
    duration: int = -1

    def doc(self) -> dict[str, Any]:
        return {
            "EventId": self.event_id,
            "EventType": self.event_type,
            "ResourceType": "VirtualMachine",
            "Resources": self.resources,
            "EventStatus": self.status,
            "NotBefore": self.not_before,
            "Description": f"simulated {self.event_type}",
            "EventSource": self.source,
            "DurationInSeconds": self.duration,
        }


class AzureSimulator(SimBase):
    def __init__(self, *, port: int = 0, first_answer_delay: float = 0.0,
                 compute: Mapping[str, Any] | None = None,
                 versions: tuple[str, ...] = (NEW_API, OLD_API),
                 refuse_status: int = 400) -> None:  # fmt: skip
        super().__init__(port=port)
        self.versions = versions
        self.refuse_status = refuse_status
        self.compute = dict(DEFAULT_COMPUTE)
        self.compute.update(compute or {})
        self.first_answer_delay = first_answer_delay
        self._first_answered = False
        self._events: list[_Event] = []
        self._incarnation = 1
        self.approvals: list[tuple[float, str]] = []  # (wall time, EventId)

    @property
    def vm_name(self) -> str:
        return str(self.compute["name"])

    def add_event(
        self,
        event_type: str = "Preempt",
        *,
        at: float | None = None,
        lead: float = 30.0,
        resources: list[str] | None = None,
        not_before: str | None = None,
        event_id: str | None = None,
        source: str = "Platform",
        duration: int = -1,
    ) -> str:
        """An event visible from ``at`` (default now), ``NotBefore`` = at + ``lead``."""
        visible = self._wall() if at is None else at
        eid = event_id or str(uuid.uuid4()).upper()
        nb = rfc1123(visible + lead) if not_before is None else not_before
        with self._cond:
            self._events.append(
                _Event(
                    eid,
                    event_type,
                    resources or [self.vm_name],
                    "Scheduled",
                    nb,
                    visible,
                    source,
                    duration,
                )
            )
            self._incarnation += 1
        return eid

    def start_event(self, event_id: str) -> None:
        """Scheduled -> Started (NotBefore empties, as it may on Azure)."""
        with self._cond:
            for event in self._events:
                if event.event_id == event_id:
                    event.status, event.not_before = "Started", ""
                    self._incarnation += 1
            self._cond.notify_all()

    def remove_event(self, event_id: str) -> None:
        with self._cond:
            self._events = [e for e in self._events if e.event_id != event_id]
            self._incarnation += 1

    def wait_for_approval(self, timeout: float = 10.0) -> list[tuple[float, str]]:
        if not self.wait_for(lambda: bool(self.approvals), timeout):
            raise TimeoutError(f"no StartRequests within {timeout:g} s")
        with self._cond:
            return list(self.approvals)

    def answer(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes, fault: str) -> Reply:  # fmt: skip
        js = {"Content-Type": "application/json; charset=utf-8"}
        if fault in ("500", "503", "429"):
            return Reply(int(fault), f"fault {fault}\n".encode(), js, fault)
        if fault in ("drop", "reset"):
            return Reply(0, fault=fault)
        if fault == "garbled":
            return Reply(200, b'{"DocumentIncarnation": 3, "Events": [{', js, fault)
        if headers.get("metadata", "").lower() != "true" or fault == "no-header":
            return Reply(
                400, b'{"error": "Bad request. Required metadata header not specified"}', js
            )
        if "api-version" not in query:
            return Reply(400, b'{"error": "Bad request. api-version was not specified"}', js)
        if path == COMPUTE_PATH and method == "GET":
            return Reply(200, json.dumps(self.compute).encode(), js)
        if path != EVENTS_PATH:
            return Reply(404, b'{"error": "Not found"}', js)
        version = query["api-version"]
        if version not in self.versions:
            refusal = {
                "error": "Bad request. api-version is invalid or was not specified in the request.",
                "newest-versions": _NEWEST,
            }
            return Reply(self.refuse_status, json.dumps(refusal).encode(), js)
        if method == "POST":
            return self._start_requests(body, js)
        if method != "GET":
            return Reply(405, b"", js)
        if not self._first_answered:
            self._first_answered = True
            if self.first_answer_delay > 0:
                self._closing.wait(self.first_answer_delay)
        now = self._wall()
        with self._cond:
            visible = [
                e.doc()
                for e in self._events
                # Versions before 2024-07-09 do not know the rebalance event type.
                if now >= e.visible_at and (e.event_type != REBALANCE or version >= NEW_API)
            ]
            doc = {"DocumentIncarnation": self._incarnation, "Events": visible}
        return Reply(200, json.dumps(doc).encode(), js)

    def _start_requests(self, body: bytes, js: Mapping[str, str]) -> Reply:
        try:
            wanted = [r["EventId"] for r in json.loads(body)["StartRequests"]]
        except (ValueError, KeyError, TypeError):
            return Reply(400, b'{"error": "Bad request"}', js)
        now = self._wall()
        with self._cond:
            for event_id in wanted:
                self.approvals.append((now, str(event_id)))
        for event_id in wanted:
            self.start_event(str(event_id))
        return Reply(200, b"", js)


def serve(port: int, evict_in: float | None, event_type: str, lead: float,
          other_vm: bool = False) -> AzureSimulator:  # fmt: skip
    sim = AzureSimulator(port=port)
    sim.start()
    if evict_in is not None:
        resources = ["another-vm"] if other_vm else None
        sim.add_event(event_type, at=time.time() + evict_in, lead=lead, resources=resources)
    return sim


__all__ = ["AzureSimulator", "rfc1123", "serve"]
