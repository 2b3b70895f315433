"""The simulator's Auto Scaling lifecycle state and maintenance events, at chosen moments."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from spotwatch.imdssim import (
    LIFECYCLE_PATH,
    MAINTENANCE_HISTORY_PATH,
    MAINTENANCE_SCHEDULED_PATH,
    ImdsSimulator,
    format_event_time,
)

T0 = 1_800_000_000.0


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Iterator[ImdsSimulator]:
    with ImdsSimulator(wall_clock=clock) as simulator:
        yield simulator


def get(sim: ImdsSimulator, path: str) -> requests.Response:
    return requests.get(sim.url + path, timeout=5)


def test_lifecycle_state_changes_at_its_moments(sim: ImdsSimulator, clock: Clock) -> None:
    sim.schedule_lifecycle_state("InService", at=T0 + 5)
    sim.schedule_lifecycle_state("Terminated", at=T0 + 10)
    assert get(sim, LIFECYCLE_PATH).status_code == 404  # before the first transition
    clock.now = T0 + 5
    assert get(sim, LIFECYCLE_PATH).text == "InService"
    clock.now = T0 + 10
    assert get(sim, LIFECYCLE_PATH).text == "Terminated"


def test_maintenance_listed_rescheduled_and_completed(sim: ImdsSimulator, clock: Clock) -> None:
    sim.schedule_maintenance("e1", T0 + 100, code="instance-stop", at=T0 + 2, not_after=T0 + 200)
    sim.schedule_maintenance("e1", T0 + 300, code="instance-stop", at=T0 + 4)
    sim.end_maintenance("e1", "completed", at=T0 + 6)
    assert get(sim, MAINTENANCE_SCHEDULED_PATH).json() == []
    clock.now = T0 + 2
    (event,) = get(sim, MAINTENANCE_SCHEDULED_PATH).json()
    assert event == {
        "NotBefore": format_event_time(T0 + 100),
        "Code": "instance-stop",
        "Description": "scheduled maintenance",
        "EventId": "e1",
        "State": "active",
        "NotAfter": format_event_time(T0 + 200),
    }
    clock.now = T0 + 4
    (moved,) = get(sim, MAINTENANCE_SCHEDULED_PATH).json()
    assert moved["NotBefore"] == format_event_time(T0 + 300)
    assert get(sim, MAINTENANCE_HISTORY_PATH).json() == []
    clock.now = T0 + 6
    assert get(sim, MAINTENANCE_SCHEDULED_PATH).json() == []
    (done,) = get(sim, MAINTENANCE_HISTORY_PATH).json()
    assert done["State"] == "completed" and done["EventId"] == "e1"
    assert format_event_time(1548061243) == "21 Jan 2019 09:00:43 GMT"


@pytest.mark.parametrize("path", [LIFECYCLE_PATH, MAINTENANCE_SCHEDULED_PATH])
def test_the_same_faults_on_the_new_paths(sim: ImdsSimulator, path: str) -> None:
    sim.schedule_lifecycle_state("InService")
    sim.inject("503", count=1, path=path)
    sim.inject("invalid-json", count=1, path=path)
    assert get(sim, path).status_code == 503
    garbled = get(sim, path)
    assert garbled.status_code == 200
    with pytest.raises(ValueError):
        json.loads(garbled.text)
    assert get(sim, path).status_code == 200
    assert [r.fault for r in sim.requests(path)] == ["503", "invalid-json", ""]
