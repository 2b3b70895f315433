"""The watch loop on a system shutdown, on the fake clock: the hooks run to the end."""

from __future__ import annotations

from typing import Any

from spotwatch.notice import SPOT_INTERRUPTION
from spotwatch.shutdown import StopKind
from tests.watch_helpers import Harness, notice


class FakeShutdown:
    def __init__(self, kind: str | None = "poweroff", runs_hooks: bool = True,
                 timeout: float = 150.0) -> None:  # fmt: skip
        self.kind = kind
        self.runs_hooks = runs_hooks
        self.timeout = timeout
        self.signals = 1
        self.classified = 0

    def classify(self) -> StopKind:
        self.classified += 1
        return StopKind(self.kind, "test")

    def deadline(self, stopped_at: float) -> float:
        return stopped_at + self.timeout - 2.0

    def forced(self) -> bool:
        return self.signals >= 2

    def last_check(self, monitors: Any) -> list[Any]:
        found = []
        for monitor in monitors:
            try:
                answer = monitor.check()
            except Exception:
                continue
            if answer is not None:
                found.append(answer)
        return found


class FakeBoot:
    def __init__(self, previous: Any = None) -> None:
        self.previous = previous
        self.calls: list[tuple[Any, ...]] = []

    def identity(self, instance_id: str) -> None:
        self.calls.append(("identity", instance_id))

    def end_handled(self, n: Any) -> None:
        self.calls.append(("end_handled", n.id))

    def resumed(self) -> None:
        self.calls.append(("resumed",))

    def shutdown_began(self, kind: str, notice_id: Any, hooks: Any) -> None:
        self.calls.append(("shutdown_began", kind, notice_id, tuple(hooks)))

    def shutdown_ended(self, left: Any) -> None:
        self.calls.append(("shutdown_ended", tuple(left)))


def test_idle_shutdown_runs_every_hook_once_as_a_shutdown_event() -> None:
    link, boot = FakeShutdown(), FakeBoot()
    h = Harness({"spot": []}, stop_after_polls=2, shutdown=link, boot=boot)
    h.watcher.run()
    assert len(h.runs) == 1
    run = h.runs[0]
    assert run["hooks"] == ["10-a", "20-b"]
    assert run["env"]["SPOTWATCH_EVENT"] == "shutdown"
    assert run["env"]["SPOTWATCH_SHUTDOWN"] == "poweroff"
    # The deadline is the stop timeout less the reserve, from when the stop was seen.
    stopped_at = next(f for e, f in h.events if e == "shutdown.detected")
    assert stopped_at["shutdown"] == "poweroff"
    assert h.journal.finished[run["env"]["SPOTWATCH_NOTICE_ID"]] == ["10-a", "20-b"]
    deadline = int(run["env"]["SPOTWATCH_DEADLINE"])
    assert h.clock.wall - 10 < deadline - 148 < h.clock.wall
    assert link.classified == 1
    assert ("shutdown_ended", ()) in boot.calls
    assert any(c[0] == "end_handled" for c in boot.calls)


def test_an_operators_stop_runs_no_hook() -> None:
    h = Harness({"spot": []}, stop_after_polls=2, shutdown=FakeShutdown(kind=None))
    h.watcher.run()
    assert h.runs == []


def test_without_a_shutdown_link_a_stop_is_an_operators() -> None:
    h = Harness({"spot": []}, stop_after_polls=2)
    h.watcher.run()
    assert h.runs == []


def test_the_shutdown_source_left_out_runs_no_hook() -> None:
    boot = FakeBoot()
    h = Harness({"spot": []}, stop_after_polls=2,
                shutdown=FakeShutdown(runs_hooks=False), boot=boot)  # fmt: skip
    h.watcher.run()
    assert h.runs == []
    assert ("shutdown_ended", ()) in boot.calls


def test_a_notice_seen_in_the_last_check_runs_as_itself_capped_to_the_shutdown() -> None:
    h = Harness({"spot": []}, stop_after_polls=1, shutdown=FakeShutdown(timeout=30.0))
    # Nothing on the first poll; the notice is out by the last check.
    h.monitors[0].script = [None, notice(SPOT_INTERRUPTION, "gce-1", lead=30.0, clock=h.clock)]
    h.watcher.run()
    assert [r["env"]["SPOTWATCH_EVENT"] for r in h.runs] == [SPOT_INTERRUPTION]
    assert h.runs[0]["hooks"] == ["10-a", "20-b"]
    assert h.runs[0]["env"]["SPOTWATCH_NOTICE_ID"] == "gce-1"


def test_a_shutdown_during_the_first_hook_runs_all_the_rest() -> None:
    h = Harness({"spot": [notice()]}, hooks=("10-a", "20-b", "30-c"), stop_in_hook="10-a",
                shutdown=FakeShutdown())  # fmt: skip
    h.watcher.run()
    assert h.journal.finished["n1"] == ["10-a", "20-b", "30-c"]
    assert "n1" in h.journal.completed
    # The end was handled: no second run as a shutdown event.
    assert [r["env"]["SPOTWATCH_EVENT"] for r in h.runs] == [SPOT_INTERRUPTION]


def test_an_operators_stop_during_a_hook_finishes_only_that_one() -> None:
    h = Harness({"spot": [notice()]}, hooks=("10-a", "20-b", "30-c"), stop_in_hook="10-a",
                shutdown=FakeShutdown(kind=None))  # fmt: skip
    h.watcher.run()
    assert h.journal.finished["n1"] == ["10-a"]
    assert "n1" not in h.journal.completed


def test_a_second_signal_in_a_shutdown_stops_everything() -> None:
    link, boot = FakeShutdown(), FakeBoot()
    link.signals = 2
    h = Harness({"spot": [notice()]}, hooks=("10-a", "20-b", "30-c"), stop_in_hook="10-a",
                shutdown=link, boot=boot)  # fmt: skip
    h.watcher.run()
    assert h.journal.finished["n1"] == ["10-a"]
    assert ("shutdown_ended", ("20-b", "30-c")) in boot.calls


def test_the_shutdown_deadline_lowers_a_later_notice_deadline() -> None:
    h = Harness({"spot": [notice(lead=600.0)]}, hooks=("10-a", "20-b"), stop_in_hook="10-a",
                shutdown=FakeShutdown(timeout=30.0))  # fmt: skip
    h.watcher.run()
    assert h.journal.finished["n1"] == ["10-a", "20-b"]
    # The second batch ran with the shutdown's deadline, not the notice's 600 s.
    last = h.runs[-1]
    assert last["hooks"] == ["20-b"]
    assert last["deadline_mono"] < h.clock.mono + 30


def test_a_shutdown_after_a_handled_end_runs_nothing_more() -> None:
    h = Harness({"spot": [notice()]}, stop_after_polls=2, shutdown=FakeShutdown())
    h.watcher.run()
    assert len(h.runs) == 1 and h.runs[0]["env"]["SPOTWATCH_EVENT"] == SPOT_INTERRUPTION
