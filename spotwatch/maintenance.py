"""Scheduled maintenance (``events/maintenance/scheduled``) as planned notices.

Events are announced days ahead, so the list is read about once a minute, not
every tick; between reads the monitor answers from its plan. An active event
becomes a notice ``lead`` seconds before its ``NotBefore`` (at once when first
seen inside that window). Just before a planned event's hooks would start the
list is read again, so a cancel or a reschedule since the last read is
honoured: a canceled or completed event never runs; a rescheduled one (same
``EventId``, new ``NotBefore``) is a new plan, and its notice id (from
``EventId`` and ``NotBefore``) is new too, while an event still listed after its
``NotBefore`` keeps its id, so the journal runs it once.

The parser is pure; times are ``D Mon YYYY HH:MM:SS GMT`` (RFC 3339 accepted too).
"""

from __future__ import annotations

import json
import re
import time
from calendar import timegm
from dataclasses import dataclass
from typing import Callable

from spotwatch.imds import ImdsClient, ImdsError
from spotwatch.logs import get_logger
from spotwatch.monitor import MonitorBase
from spotwatch.monitors import KEY_FORMAT, effective_deadline, parse_time
from spotwatch.notice import SCHEDULED_MAINTENANCE, Notice, notice_id

SCHEDULED_PATH = "/latest/meta-data/events/maintenance/scheduled"
HISTORY_PATH = "/latest/meta-data/events/maintenance/history"
SOURCE_SCHEDULED = "events/maintenance/scheduled"
# Codes whose event ends the instance (and so folds with a spot or Auto Scaling notice).
ENDING_CODES = frozenset({"instance-stop", "instance-retirement"})
REFRESH_SECONDS = 60.0
# A plan read longer ago than this is read again before its hooks start.
FRESH_SECONDS = 1.0
# Without a NotAfter, an event past its NotBefore is still run this long after it.
LATE_WINDOW_SECONDS = 600.0

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_EVENT_TIME = re.compile(
    r"(?:[A-Za-z]{3},?\s+)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})"
    r"\s*(?:GMT|UTC|Z|\+0000)?"
)


def parse_event_time(raw: str) -> float | None:
    """``21 Jan 2019 09:00:43 GMT`` (or RFC 3339) -> epoch seconds; None if unusable."""
    m = _EVENT_TIME.fullmatch(raw.strip())
    if m is None:
        return parse_time(raw)
    day, month, year, hour, minute, second = m.groups()
    number = _MONTHS.get(month.lower())
    if number is None:
        return None
    fields = (int(year), number, int(day), int(hour), int(minute), min(int(second), 59))
    if not (1 <= fields[2] <= 31 and fields[3] <= 23 and fields[4] <= 59):
        return None
    return float(timegm((*fields, 0, 0, 0)))


@dataclass(frozen=True)
class MaintenanceEvent:
    event_id: str
    code: str
    state: str
    not_before: float
    raw_not_before: str
    not_after: float | None = None
    description: str = ""
    # Another source's event planned the same way (Google's upcoming maintenance):
    # whether it ends the instance (None: by Code), its source and hook variables.
    ending: bool | None = None
    source: str = SOURCE_SCHEDULED
    env: tuple[tuple[str, str], ...] = ()

    @property
    def ends_instance(self) -> bool:
        return self.code in ENDING_CODES if self.ending is None else self.ending

    @property
    def key(self) -> str:
        """EventId and NotBefore: a reschedule is a new key, the same listing the same."""
        return f"{self.event_id}@{time.strftime(KEY_FORMAT, time.gmtime(int(self.not_before)))}"


def parse_scheduled(body: bytes) -> tuple[list[MaintenanceEvent], str]:
    """The events in a ``scheduled`` (or ``history``) answer, and what was odd about it.

    A body that is not a JSON array gives no events and a problem; an entry without
    a usable ``EventId``, ``Code`` or ``NotBefore`` is left out and named.
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [], f"not valid JSON: {_excerpt(body)}"
    if not isinstance(doc, list):
        return [], f"not a JSON array: {_excerpt(body)}"
    events, odd = [], []
    for item in doc:
        event = _event(item)
        if event is None:
            odd.append(_excerpt(json.dumps(item).encode()))
        else:
            events.append(event)
    if odd:
        return events, f"entries without a usable EventId, Code or NotBefore: {', '.join(odd)}"
    return events, ""


def _event(item: object) -> MaintenanceEvent | None:
    if not isinstance(item, dict):
        return None
    event_id, code, raw = item.get("EventId"), item.get("Code"), item.get("NotBefore")
    if not (isinstance(event_id, str) and isinstance(code, str) and isinstance(raw, str)):
        return None
    not_before = parse_event_time(raw)
    if not event_id.strip() or not code.strip() or not_before is None:
        return None
    raw_after = item.get("NotAfter")
    not_after = parse_event_time(raw_after) if isinstance(raw_after, str) else None
    state = item.get("State")
    return MaintenanceEvent(
        event_id=event_id.strip(),
        code=code.strip(),
        # No State given: listed as scheduled, so taken as active.
        state=state.strip().lower() if isinstance(state, str) else "active",
        not_before=not_before,
        raw_not_before=raw,
        not_after=not_after,
        description=str(item.get("Description", "")),
    )


def _excerpt(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def due(events: list[MaintenanceEvent], now: float, lead: float) -> MaintenanceEvent | None:
    """The active event whose hooks are due at ``now``: inside its lead window and not
    past its end (NotAfter, else NotBefore + LATE_WINDOW_SECONDS). The earliest first."""
    ready = [
        e
        for e in events
        if e.state == "active"
        and now >= e.not_before - lead
        and now < (e.not_after or e.not_before + LATE_WINDOW_SECONDS)
    ]
    return min(ready, key=lambda e: e.not_before, default=None)


def next_planned(events: list[MaintenanceEvent], now: float) -> MaintenanceEvent | None:
    upcoming = [e for e in events if e.state == "active" and e.not_before > now]
    return min(upcoming, key=lambda e: e.not_before, default=None)


def to_notice(event: MaintenanceEvent, seen_at: float) -> Notice:
    return Notice(
        kind=SCHEDULED_MAINTENANCE,
        action=event.code,
        raw_time=event.raw_not_before,
        time=event.not_before,
        deadline=effective_deadline(event.not_before, seen_at),
        id=notice_id(SCHEDULED_MAINTENANCE, event.code, event.key),
        source=event.source,
        ends_instance=event.ends_instance,
        env=(("SPOTWATCH_MAINTENANCE_EVENT_ID", event.event_id), *event.env),
    )


class MaintenanceMonitor(MonitorBase):
    """Reads ``events/maintenance/scheduled`` about once a minute; each check() answers
    the event due now, from the plan, read afresh just before it is handed out."""

    name = SCHEDULED_MAINTENANCE
    source = SOURCE_SCHEDULED

    def __init__(
        self,
        client: ImdsClient | None,
        *,
        lead: float,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = REFRESH_SECONDS,
    ) -> None:
        self._client = client
        self._lead = lead
        self._wall = wall_clock
        self._clock = clock
        self._refresh = refresh
        self._events: list[MaintenanceEvent] = []
        self._read_at: float | None = None  # clock() of the last good read
        self._next_read = float("-inf")
        self._failing: ImdsError | None = None
        self._problem = ""
        self._planned: set[str] = set()
        self._handed_out: set[str] = set()  # keys of events already given as notices
        self._log = get_logger(monitor=self.name)

    def check(self) -> Notice | None:
        """One tick: the due event's notice, or None; ImdsError while the list cannot be read."""
        if self._clock() >= self._next_read:
            try:
                self._read()
            except ImdsError:
                pass  # self._failing: raised below unless an event from the plan is due
        event = due(self._events, self._wall(), self._lead)
        if event is not None and event.key not in self._handed_out and self._stale():
            # A cancel or reschedule since the last read must be honoured.
            try:
                self._read()
            except ImdsError:
                pass  # better the hooks on the last plan than none
            event = due(self._events, self._wall(), self._lead)
        if event is not None:
            # Handed out again on later ticks (the journal knows it is done), without
            # a read each time: the list is read once a minute again.
            self._handed_out.add(event.key)
            return to_notice(event, self._wall())
        if self._failing is not None:
            raise self._failing
        return None

    def _stale(self) -> bool:
        return self._read_at is None or self._clock() - self._read_at > FRESH_SECONDS

    def status_note(self) -> str | None:
        """The next planned maintenance, for the STATUS line; None when there is none."""
        event = next_planned(self._events, self._wall())
        if event is None:
            return None
        at = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(event.not_before))
        hooks = time.strftime("%H:%M:%SZ", time.gmtime(event.not_before - self._lead))
        return f"next maintenance {event.code} {event.event_id} at {at} (hooks from {hooks})"

    def _fetch(self) -> tuple[list[MaintenanceEvent], str]:
        """The events listed now and what was odd; ImdsError when they cannot be read."""
        assert self._client is not None
        resp = self._client.get(SCHEDULED_PATH)
        return parse_scheduled(resp.body) if resp.status == 200 else ([], "")

    def _read(self) -> None:
        self._next_read = self._clock() + self._refresh
        try:
            events, problem = self._fetch()
        except ImdsError as err:
            # Try again within a tick or so, and keep failing until a read succeeds, so
            # the watcher logs the fault once and its recovery when it really clears.
            self._next_read = self._clock() + min(self._refresh, 5.0)
            self._failing = err
            raise
        self._failing = None
        self._read_at = self._clock()
        if problem != self._problem:
            if problem:
                self._log.warning(
                    "maintenance.unparsable",
                    source=self.source,
                    problem=problem,
                    note="treated as no events; logged once until the answer changes",
                )
            self._problem = problem
        self._note_changes(events)
        self._events = events

    def _note_changes(self, events: list[MaintenanceEvent]) -> None:
        keys = {e.key: e for e in events if e.state == "active"}
        for key, event in keys.items():
            if key not in self._planned:
                self._log.info(
                    "maintenance.planned",
                    source=self.source,
                    event_id=event.event_id,
                    code=event.code,
                    not_before=event.raw_not_before,
                    hooks_at=round(event.not_before - self._lead, 3),
                    ends_instance=event.ends_instance,
                )
        for key in self._planned - set(keys):
            self._log.info(
                "maintenance.unplanned",
                source=self.source,
                key=key,
                note="canceled, completed or moved",
            )
        self._planned = set(keys)
