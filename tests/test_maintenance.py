"""Scheduled maintenance: the parser (pure) and the monitor's plan against the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from spotwatch.imds import ImdsClient, ImdsError
from spotwatch.imdssim import (
    MAINTENANCE_HISTORY_PATH,
    MAINTENANCE_SCHEDULED_PATH,
    ImdsSimulator,
    format_event_time,
)
from spotwatch.maintenance import (
    MaintenanceMonitor,
    due,
    parse_event_time,
    parse_scheduled,
    to_notice,
)

T0 = 1_800_000_000.0
DOC = [
    {
        "NotBefore": "21 Jan 2019 09:00:43 GMT",
        "Code": "system-reboot",
        "Description": "scheduled reboot",
        "EventId": "instance-event-0d59937288b749b32",
        "NotAfter": "21 Jan 2019 09:17:23 GMT",
        "State": "active",
    }
]


def test_event_times() -> None:
    assert parse_event_time("21 Jan 2019 09:00:43 GMT") == 1548061243.0
    assert parse_event_time("1 Feb 2027 00:00:00 GMT") == parse_event_time("2027-02-01T00:00:00Z")
    assert parse_event_time(format_event_time(T0)) == T0
    for bad in ("", "32 Jan 2019 09:00:43 GMT", "21 Foo 2019 09:00:43 GMT", "soon"):
        assert parse_event_time(bad) is None


def test_parse_the_documented_example() -> None:
    (event,), problem = parse_scheduled(json.dumps(DOC).encode())
    assert problem == ""
    assert event.event_id == "instance-event-0d59937288b749b32"
    assert event.code == "system-reboot" and event.state == "active"
    assert event.not_before == 1548061243.0 and event.not_after == 1548062243.0
    assert not event.ends_instance
    notice = to_notice(event, event.not_before - 100)
    assert notice.kind == "scheduled-maintenance" and notice.action == "system-reboot"
    assert notice.deadline == event.not_before
    assert dict(notice.env) == {"SPOTWATCH_MAINTENANCE_EVENT_ID": event.event_id}
    assert notice.raw_time == "21 Jan 2019 09:00:43 GMT"


@pytest.mark.parametrize(
    ("code", "ends"),
    [("instance-stop", True), ("instance-retirement", True), ("instance-reboot", False),
     ("system-reboot", False), ("system-maintenance", False)],
)  # fmt: skip
def test_which_codes_end_the_instance(code: str, ends: bool) -> None:
    (event,), _ = parse_scheduled(json.dumps([{**DOC[0], "Code": code}]).encode())
    assert event.ends_instance is ends and to_notice(event, 0).ends_instance is ends


def test_odd_answers_are_nothing_with_a_problem() -> None:
    assert parse_scheduled(b"[]") == ([], "")
    for body in (b"not json", b'{"a": 1}', b"\xff"):
        events, problem = parse_scheduled(body)
        assert events == [] and problem
    events, problem = parse_scheduled(json.dumps([DOC[0], {"Code": "x"}, 3]).encode())
    assert len(events) == 1 and "EventId" in problem
    # No NotAfter, no State: accepted (active).
    (event,), _ = parse_scheduled(json.dumps([{k: v for k, v in DOC[0].items() if k in
                                  ("NotBefore", "Code", "EventId")}]).encode())  # fmt: skip
    assert event.state == "active" and event.not_after is None


def test_a_reschedule_is_a_new_notice_id_and_the_same_listing_the_same() -> None:
    (a,), _ = parse_scheduled(json.dumps(DOC).encode())
    (b,), _ = parse_scheduled(json.dumps(DOC).encode())
    moved = {**DOC[0], "NotBefore": "22 Jan 2019 09:00:43 GMT"}
    (c,), _ = parse_scheduled(json.dumps([moved]).encode())
    assert to_notice(a, 0).id == to_notice(b, 10).id != to_notice(c, 0).id


def test_due_window() -> None:
    (event,), _ = parse_scheduled(json.dumps(DOC).encode())
    nb = event.not_before
    assert due([event], nb - 301, 300) is None
    assert due([event], nb - 300, 300) == event
    assert due([event], nb + 100, 300) == event  # still inside NotAfter
    assert due([event], event.not_after or 0, 300) is None
    canceled = parse_scheduled(json.dumps([{**DOC[0], "State": "canceled"}]).encode())[0]
    assert due(canceled, nb - 10, 300) is None


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim_and_clock() -> Iterator[tuple[ImdsSimulator, Clock]]:
    clock = Clock()
    with ImdsSimulator(wall_clock=clock) as sim:
        yield sim, clock


def monitor(sim: ImdsSimulator, clock: Clock, lead: float = 300) -> MaintenanceMonitor:
    client = ImdsClient(sim.url, budget=2.0)
    return MaintenanceMonitor(client, lead=lead, wall_clock=clock, clock=clock)


def test_monitor_reads_once_a_minute_and_again_just_before_the_hooks(
    sim_and_clock: tuple[ImdsSimulator, Clock],
) -> None:
    sim, clock = sim_and_clock
    sim.schedule_maintenance("e1", T0 + 1000, code="instance-retirement", at=T0)
    m = monitor(sim, clock)
    assert m.check() is None and sim.count(MAINTENANCE_SCHEDULED_PATH) == 1
    note = m.status_note()
    assert note is not None and "instance-retirement e1" in note
    for _ in range(10):  # ticks within the minute: no reads
        clock.now += 5
        assert m.check() is None
    assert sim.count(MAINTENANCE_SCHEDULED_PATH) == 1
    clock.now += 20
    assert m.check() is None and sim.count(MAINTENANCE_SCHEDULED_PATH) == 2
    clock.now = T0 + 700  # inside the lead window: read again before handing it out
    reads = sim.count(MAINTENANCE_SCHEDULED_PATH)
    notice = m.check()
    assert notice is not None and notice.ends_instance and notice.deadline == T0 + 1000
    assert sim.count(MAINTENANCE_SCHEDULED_PATH) == reads + 1
    # Handed out: later ticks answer it from the plan, without a read each time.
    for _ in range(5):
        clock.now += 5
        assert m.check() == notice
    assert sim.count(MAINTENANCE_SCHEDULED_PATH) == reads + 1


def test_monitor_honours_a_cancel_seen_just_before(
    sim_and_clock: tuple[ImdsSimulator, Clock],
) -> None:
    sim, clock = sim_and_clock
    sim.schedule_maintenance("e1", T0 + 400, at=T0)
    m = monitor(sim, clock)
    assert m.check() is None
    sim.end_maintenance("e1", "canceled", at=T0 + 50)
    clock.now = T0 + 100  # the plan says due; the fresh read says canceled
    assert m.check() is None
    assert m.status_note() is None
    history = json.loads(ImdsClient(sim.url).get(MAINTENANCE_HISTORY_PATH).body)
    assert [e["State"] for e in history] == ["canceled"]


def test_monitor_garbled_list_logged_once_and_nothing(
    sim_and_clock: tuple[ImdsSimulator, Clock],
) -> None:
    sim, clock = sim_and_clock
    sim.inject("invalid-json", count=None, path=MAINTENANCE_SCHEDULED_PATH)
    m = monitor(sim, clock)
    with capture_logs() as logs:
        for _ in range(3):
            assert m.check() is None
            clock.now += 61
    assert [e["event"] for e in logs].count("maintenance.unparsable") == 1


def test_monitor_fault_is_raised_until_a_read_succeeds(
    sim_and_clock: tuple[ImdsSimulator, Clock],
) -> None:
    sim, clock = sim_and_clock
    m = MaintenanceMonitor(ImdsClient(sim.url, budget=0.3), lead=300, wall_clock=clock, clock=clock)
    sim.inject("500", count=None, path=MAINTENANCE_SCHEDULED_PATH)
    with pytest.raises(ImdsError):
        m.check()
    clock.now += 1  # no read due yet, but still failing: no false recovery
    with pytest.raises(ImdsError):
        m.check()
    sim.clear_faults()
    clock.now += 5
    assert m.check() is None
