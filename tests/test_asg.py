"""Auto Scaling termination: the lifecycle-state monitor and the lifecycle follow-up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from spotwatch.asg import AsgTerminationMonitor, LifecycleFollowUp, parse_lifecycle_state
from spotwatch.imds import ImdsClient
from spotwatch.imdssim import LIFECYCLE_PATH, ImdsSimulator
from spotwatch.notice import ASG_TERMINATION, Notice
from tests.fake_autoscaling import FakeAutoScaling
from tests.helpers import wait_until

INSTANCE = "i-0abc"


@pytest.mark.parametrize(
    ("body", "state", "odd"),
    [(b"InService", "InService", False), (b"Terminated\n", "Terminated", False),
     (b"Warmed:Terminated", "Warmed:Terminated", False), (b"Standby", "Standby", False),
     (b'{"action": "terminate", "time": ', None, True), (b"", None, True)],
)  # fmt: skip
def test_parse_lifecycle_state(body: bytes, state: str | None, odd: bool) -> None:
    parsed, problem = parse_lifecycle_state(body)
    assert parsed == state and bool(problem) is odd


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    with ImdsSimulator() as simulator:
        yield simulator


def test_monitor_terminated_is_a_notice_the_rest_nothing(sim: ImdsSimulator) -> None:
    clock = [1000.0]
    m = AsgTerminationMonitor(
        ImdsClient(sim.url), deadline_seconds=300, group_name="web", wall_clock=lambda: clock[0]
    )
    assert m.check() is None  # 404: no transition yet
    sim.schedule_lifecycle_state("InService")
    assert m.check() is None
    sim.schedule_lifecycle_state("Terminated")
    first = m.check()
    assert first is not None and first.kind == ASG_TERMINATION and first.action == "terminate"
    assert first.deadline == 1300.0 and dict(first.env) == {"SPOTWATCH_ASG_NAME": "web"}
    clock[0] += 10
    again = m.check()
    assert again == first  # same id, deadline from first sight
    assert first.ends_instance


def test_monitor_garbled_state_logged_once_as_nothing(sim: ImdsSimulator) -> None:
    m = AsgTerminationMonitor(ImdsClient(sim.url), deadline_seconds=300)
    sim.schedule_lifecycle_state("InService")
    sim.inject("invalid-json", count=3, path=LIFECYCLE_PATH)
    with capture_logs() as logs:
        assert [m.check() for _ in range(4)] == [None] * 4
    assert [e["event"] for e in logs].count("asg.unparsable") == 1


def asg_notice(deadline: float) -> Notice:
    return Notice(ASG_TERMINATION, "terminate", "", None, deadline, "n-asg", "test")


class Result:
    def __init__(self, name: str, ok: bool) -> None:
        self.name, self.ok = name, ok


def follow_up(fake: FakeAutoScaling, group: str | None = None) -> LifecycleFollowUp:
    return LifecycleFollowUp(
        hook="drain",
        group=group,
        make_client=lambda: fake.client(),
        instance_id=lambda: INSTANCE,
    )


def test_follow_up_finds_the_group_beats_and_completes_after_the_hooks() -> None:
    with FakeAutoScaling() as fake:
        fake.add_instance(INSTANCE, group="web", hooks={"drain": 1})  # a beat every 0.5 s
        f = follow_up(fake)
        n = asg_notice(time.time() + 30)
        assert f.applies(n) and not f.applies(
            Notice("spot-interruption", "t", "", None, 0, "x", "t")
        )
        began = time.monotonic()
        f.started(n)
        assert time.monotonic() - began < 2.5
        assert f.environment(n) == (("SPOTWATCH_ASG_NAME", "web"),)
        wait_until(lambda: len(fake.calls_of("RecordLifecycleActionHeartbeat")) >= 2, 10, "beats")
        assert fake.completed(INSTANCE) is None  # not while the hooks run
        results: list[Any] = [Result("10-a", False), Result("20-b", True)]
        with capture_logs() as logs:
            f.finished(n, results)
            assert f.wait(n.id, 10)
        assert fake.completed(INSTANCE) == "CONTINUE"
        (done,) = [e for e in logs if e["event"] == "asg.lifecycle_completed"]
        assert done["hooks"] == "some failed: 10-a" and done["timed_out"] is False


def test_follow_up_in_no_group_logs_once_and_gives_up_at_the_deadline() -> None:
    with FakeAutoScaling() as fake:
        f = follow_up(fake)
        n = asg_notice(time.time() + 2.5)
        with capture_logs() as logs:
            f.started(n)
            f.finished(n, [])
            assert f.wait(n.id, 10)
        assert [e["event"] for e in logs].count("asg.group_unknown") == 1
        assert len(fake.calls_of("DescribeAutoScalingInstances")) >= 2  # retried
        assert fake.calls_of("CompleteLifecycleAction") == []
