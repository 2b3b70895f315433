"""A Google Compute Engine metadata server simulator on 127.0.0.1.

Speaks the protocol spotwatch relies on: ``Metadata-Flavor: Google`` required on
every request (403 without) and sent on every answer, an ``ETag`` per value,
hanging GETs (``wait_for_change=true``, ``last_etag``, ``timeout_sec``) that
answer at once when the ETag differs, when the value changes, or after
``timeout_sec`` with the value unchanged. Faults: see ``simserver.FAULTS``
(``no-header`` answers without ``Metadata-Flavor``).

``instance/upcoming-maintenance`` is 404 until ``set_upcoming`` announces a
window (served as JSON, as with ``?alt=json``); ``set_upcoming(None)`` takes it
away again. ``instance/scheduling/on-host-maintenance`` is ``TERMINATE``, as on
every Spot VM.

    with GceSimulator() as sim:
        sim.schedule("instance/preempted", "TRUE", at=time.time() + 2)
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from spotwatch.simserver import Reply, SimBase

BASE_PATH = "/computeMetadata/v1/"
PREEMPTED = "instance/preempted"
MAINTENANCE_EVENT = "instance/maintenance-event"
UPCOMING = "instance/upcoming-maintenance"
ON_HOST_MAINTENANCE = "instance/scheduling/on-host-maintenance"
MAX_HANG = 3600

DEFAULT_VALUES: dict[str, str] = {
    "instance/id": "4520031799277581759",
    "instance/name": "spot-vm-1",
    "instance/machine-type": "projects/123456789012/machineTypes/e2-standard-4",
    "instance/zone": "projects/123456789012/zones/us-central1-a",
    "instance/hostname": "spot-vm-1.us-central1-a.c.project.internal",
    PREEMPTED: "FALSE",
    MAINTENANCE_EVENT: "NONE",
    ON_HOST_MAINTENANCE: "TERMINATE",
}


def upcoming_doc(
    start: float,
    *,
    hours: float = 1.0,
    status: str = "PENDING",
    kind: str = "SCHEDULED",
    can_reschedule: bool = True,
    reasons: tuple[str, ...] = ("HOST_UPDATE",),
) -> dict[str, Any]:
    """An ``upcoming-maintenance`` answer whose window opens at epoch ``start``."""

    def stamp(epoch: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

    return {
        "type": kind,
        "can_reschedule": can_reschedule,
        "window_start_time": stamp(start),
        "window_end_time": stamp(start + hours * 3600),
        "latest_window_start_time": stamp(start + 7 * 86400),
        "maintenance_status": status,
        "maintenance_reasons": list(reasons),
    }


def etag_of(value: str, generation: int) -> str:
    return hashlib.sha1(f"{generation}:{value}".encode()).hexdigest()[:16]


class GceSimulator(SimBase):
    def __init__(self, *, port: int = 0, values: Mapping[str, str] | None = None) -> None:
        super().__init__(port=port)
        self._values = dict(DEFAULT_VALUES)
        self._values.update(values or {})
        self._generation = 0
        self._etags = {k: etag_of(v, 0) for k, v in self._values.items()}
        self._changed_at: dict[str, float] = {}
        self._timers: list[threading.Timer] = []

    def set_value(self, path: str, value: str) -> None:
        """Change a value now: hanging GETs on it answer at once."""
        with self._cond:
            self._generation += 1
            self._values[path] = value
            self._etags[path] = etag_of(value, self._generation)
            self._changed_at[path] = self._wall()
            self._cond.notify_all()

    def set_upcoming(self, doc: Mapping[str, Any] | None) -> None:
        """Announce (a JSON object, see ``upcoming_doc``) or take away (None) the
        upcoming maintenance."""
        if doc is not None:
            self.set_value(UPCOMING, json.dumps(doc))
            return
        with self._cond:
            self._generation += 1
            self._values.pop(UPCOMING, None)
            self._etags.pop(UPCOMING, None)
            self._changed_at[UPCOMING] = self._wall()
            self._cond.notify_all()

    def schedule(self, path: str, value: str, at: float) -> None:
        """Change a value at wall time ``at``."""
        timer = threading.Timer(max(0.0, at - self._wall()), self.set_value, (path, value))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def changed_at(self, path: str) -> float | None:
        with self._cond:
            return self._changed_at.get(path)

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        super().stop()

    def answer(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes, fault: str) -> Reply:  # fmt: skip
        flavor = {"Metadata-Flavor": "Google", "Content-Type": "application/text"}
        if fault in ("500", "503", "429"):
            return Reply(int(fault), f"fault {fault}\n".encode(), flavor, fault)
        if fault in ("drop", "reset"):
            return Reply(0, fault=fault)
        if headers.get("metadata-flavor") != "Google":
            return Reply(403, b"Missing Metadata-Flavor:Google header.\n", flavor)
        if method != "GET":
            return Reply(405, b"Method not allowed\n", flavor)
        key = path[len(BASE_PATH) :] if path.startswith(BASE_PATH) else None
        with self._cond:
            if key is None or key not in self._values:
                return Reply(404, b"Not Found\n", flavor)
            if query.get("wait_for_change", "").lower() == "true":
                timeout = query.get("timeout_sec", "")
                limit = min(MAX_HANG, int(timeout)) if timeout.isdigit() else MAX_HANG
                last = query.get("last_etag", "")
                if last == self._etags[key] or not last:
                    # Unchanged (or no ETag to compare): wait for a change or the timeout.
                    seen = self._etags[key]
                    self._cond.wait_for(
                        lambda: self._etags.get(key) != seen or self._closing.is_set(),
                        timeout=limit,
                    )
            if key not in self._values:  # taken away while the GET hung
                return Reply(404, b"Not Found\n", flavor)
            value, etag = self._values[key], self._etags[key]
        if fault == "garbled":
            return Reply(200, b"\xff\xfe garbled \x00", {**flavor, "ETag": etag}, fault)
        if fault == "no-header":
            return Reply(200, value.encode(), {"ETag": etag, "Content-Type": "text/plain"}, fault)
        return Reply(200, value.encode(), {**flavor, "ETag": etag})


def serve(port: int, preempt_in: float | None, maintenance_in: float | None,
          maintenance: str) -> GceSimulator:  # fmt: skip
    sim = GceSimulator(port=port)
    sim.start()
    now = time.time()
    if preempt_in is not None:
        sim.schedule(PREEMPTED, "TRUE", now + preempt_in)
    if maintenance_in is not None:
        sim.schedule(MAINTENANCE_EVENT, maintenance, now + maintenance_in)
    return sim
