"""Google's upcoming-maintenance: parsing, the plan, and the simulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from structlog.testing import capture_logs

from spotwatch import gce_upcoming
from spotwatch.clouds.gcp import GceMetadata
from spotwatch.gce_upcoming import UpcomingMaintenanceMonitor, parse_upcoming
from spotwatch.imdssim_gcp import BASE_PATH, UPCOMING, GceSimulator, upcoming_doc
from spotwatch.monitors import parse_time

T0 = 1_800_000_000.0
FLAVOR = {"Metadata-Flavor": "Google"}

# The shape Google documents for ?alt=json.
DOCUMENTED = {
    "can_reschedule": True,
    "latest_window_start_time": "2026-12-20T10:00:00Z",
    "maintenance_status": "PENDING",
    "type": "SCHEDULED",
    "window_end_time": "2026-12-12T14:00:00Z",
    "window_start_time": "2026-12-12T10:00:00Z",
    "maintenance_reasons": ["HOST_UPDATE"],
}


def test_parse_the_documented_shape() -> None:
    up, problem = parse_upcoming(json.dumps(DOCUMENTED))
    assert problem == "" and up is not None
    assert up.window_start == parse_time("2026-12-12T10:00:00Z")
    assert up.window_end == parse_time("2026-12-12T14:00:00Z")
    assert (up.type, up.status, up.can_reschedule, up.reasons) == (
        "SCHEDULED", "PENDING", True, ("HOST_UPDATE",),
    )  # fmt: skip
    env = dict(gce_upcoming.hook_env(up))
    assert env["SPOTWATCH_MAINTENANCE_WINDOW_START"] == "2026-12-12T10:00:00Z"
    assert env["SPOTWATCH_MAINTENANCE_WINDOW_END"] == "2026-12-12T14:00:00Z"
    assert env["SPOTWATCH_MAINTENANCE_LATEST_WINDOW_START"] == "2026-12-20T10:00:00Z"
    assert env["SPOTWATCH_MAINTENANCE_TYPE"] == "SCHEDULED"
    assert env["SPOTWATCH_MAINTENANCE_REASONS"] == "HOST_UPDATE"
    assert env["SPOTWATCH_MAINTENANCE_CAN_RESCHEDULE"] == "true"
    assert env["SPOTWATCH_MAINTENANCE_STATUS"] == "PENDING"


@pytest.mark.parametrize(
    "body",
    [
        "",
        "NONE",
        '"NONE"',
        "{}",
        '{"error": "no notifications have been received yet, try again later"}',
    ],
)
def test_nothing_announced(body: str) -> None:
    assert parse_upcoming(body) == (None, "")


@pytest.mark.parametrize(
    "body", ["not json {", "[1, 2]", '{"type": "SCHEDULED"}', '{"window_start_time": "soon"}']
)
def test_odd_answers_are_nothing_with_a_problem(body: str) -> None:
    up, problem = parse_upcoming(body)
    assert up is None and problem


def test_string_flags_and_a_single_reason() -> None:
    doc = {**DOCUMENTED, "can_reschedule": "false", "maintenance_reasons": "FAILURE_DISK"}
    up, _ = parse_upcoming(json.dumps(doc))
    assert up is not None and up.can_reschedule is False and up.reasons == ("FAILURE_DISK",)


@pytest.mark.parametrize(
    ("policy", "migrate", "action"),
    [
        ("TERMINATE", False, "terminate"),
        ("", False, "terminate"),
        ("MIGRATE", False, None),
        ("MIGRATE", True, "migrate"),
    ],
)
def test_action_follows_the_host_maintenance_policy(
    policy: str, migrate: bool, action: str | None
) -> None:
    assert gce_upcoming.action_for(policy, migrate) == action


def test_a_reschedule_is_a_new_notice_and_complete_is_not_run() -> None:
    from spotwatch.maintenance import due, to_notice

    up, _ = parse_upcoming(json.dumps(DOCUMENTED))
    assert up is not None
    first = to_notice(gce_upcoming.as_event(up, "terminate"), up.window_start - 600)
    assert first.ends_instance and first.deadline == up.window_start
    assert first.source == "gce:instance/upcoming-maintenance"
    later = {**DOCUMENTED, "window_start_time": "2026-12-13T10:00:00Z"}
    moved, _ = parse_upcoming(json.dumps(later))
    assert moved is not None
    second = to_notice(gce_upcoming.as_event(moved, "terminate"), moved.window_start - 600)
    assert second.id != first.id
    done, _ = parse_upcoming(json.dumps({**DOCUMENTED, "maintenance_status": "COMPLETE"}))
    assert done is not None
    assert due([gce_upcoming.as_event(done, "terminate")], done.window_start, 600) is None


# -- the simulator and the monitor, over real HTTP ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim_and_clock() -> Iterator[tuple[GceSimulator, Clock]]:
    clock = Clock()
    with GceSimulator() as sim:
        yield sim, clock


def _reads(sim: GceSimulator) -> int:
    return len(sim.requests(BASE_PATH + UPCOMING))


def test_sim_serves_upcoming_maintenance_or_404() -> None:
    with GceSimulator() as sim:
        url = sim.url + BASE_PATH + UPCOMING

        def ask() -> requests.Response:
            return requests.get(url, params={"alt": "json"}, headers=FLAVOR, timeout=5)

        assert ask().status_code == 404
        sim.set_upcoming(upcoming_doc(T0, status="ONGOING"))
        got = ask()
        assert got.status_code == 200 and got.headers["Metadata-Flavor"] == "Google"
        assert got.json()["maintenance_status"] == "ONGOING"
        sim.set_upcoming(None)
        assert ask().status_code == 404
        policy = requests.get(sim.url + BASE_PATH + "instance/scheduling/on-host-maintenance",
                              headers=FLAVOR, timeout=5)  # fmt: skip
        assert policy.text == "TERMINATE"


def test_monitor_plans_rereads_and_honours_reschedule_and_completion(
    sim_and_clock: tuple[GceSimulator, Clock],
) -> None:
    sim, clock = sim_and_clock
    m = UpcomingMaintenanceMonitor(GceMetadata(sim.url), lead=300, wall_clock=clock, clock=clock)
    try:
        assert m.check() is None  # 404: none
        assert all(r.query.get("alt") == "json" for r in sim.requests(BASE_PATH + UPCOMING))
        sim.set_upcoming(upcoming_doc(T0 + 1000))
        clock.now += 61
        with capture_logs() as logs:
            assert m.check() is None
        planned = [e for e in logs if e["event"] == "maintenance.planned"]
        assert planned and planned[0]["source"] == "gce:instance/upcoming-maintenance"
        note = m.status_note()
        assert note is not None and "terminate upcoming-maintenance" in note
        # Rescheduled since the last read: the fresh read before the hooks sees it.
        sim.set_upcoming(upcoming_doc(T0 + 5000))
        clock.now = T0 + 800
        reads = _reads(sim)
        assert m.check() is None and _reads(sim) == reads + 1
        clock.now = T0 + 4800
        notice = m.check()
        assert notice is not None and notice.deadline == T0 + 5000
        assert (notice.kind, notice.action, notice.ends_instance) == (
            "scheduled-maintenance", "terminate", True,
        )  # fmt: skip
        assert dict(notice.env)["SPOTWATCH_MAINTENANCE_TYPE"] == "SCHEDULED"
        # Completed: no longer due once read again.
        sim.set_upcoming(upcoming_doc(T0 + 5000, status="COMPLETE"))
        clock.now += 61
        assert m.check() is None
    finally:
        m.close()


def test_monitor_completed_before_the_hooks_never_runs(
    sim_and_clock: tuple[GceSimulator, Clock],
) -> None:
    sim, clock = sim_and_clock
    sim.set_upcoming(upcoming_doc(T0 + 400))
    m = UpcomingMaintenanceMonitor(GceMetadata(sim.url), lead=300, wall_clock=clock, clock=clock)
    try:
        assert m.check() is None
        sim.set_upcoming(None)  # over (or withdrawn) since: 404
        clock.now = T0 + 200  # the plan says due; the fresh read says none
        assert m.check() is None
        assert m.status_note() is None
    finally:
        m.close()
