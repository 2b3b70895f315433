"""The watch loop on a fake clock: no sleeping, no network, no processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from spotwatch.notice import REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION, Identity, Notice
from spotwatch.runner import HookSettings
from spotwatch.watcher import Watcher, WatchSettings


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class FakeStop:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.flag = False
        self.slept: list[float] = []

    def is_set(self) -> bool:
        return self.flag

    def wait(self, seconds: float | None = None) -> bool:
        assert seconds is not None
        self.slept.append(seconds)
        self.clock.advance(seconds)
        return self.flag


class Fault(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.detail = f"simulated {kind}"
        self.advice = "do something"


class ScriptedMonitor:
    """Answers from a script, one entry per poll; each poll takes ``cost`` seconds."""

    def __init__(self, name: str, clock: FakeClock, script: list[Any], cost: float = 0.3) -> None:
        self.name = name
        self.clock = clock
        self.script = list(script)
        self.cost = cost
        self.calls: list[float] = []

    def check(self) -> Notice | None:
        self.calls.append(self.clock.mono)
        self.clock.advance(self.cost)
        item = self.script.pop(0) if self.script else None
        if isinstance(item, Exception):
            raise item
        return item


@dataclass(frozen=True)
class FakeHook:
    name: str
    path: Path


@dataclass(frozen=True)
class FakeResult:
    name: str
    ok: bool = True


@dataclass(frozen=True)
class FakePlan:
    directory: Path
    hooks: tuple[FakeHook, ...]
    rejected: tuple[Any, ...] = ()
    problem: str | None = None
    fix: str = ""


@dataclass
class FakeJournal:
    finished: dict[str, list[str]] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)
    begun: list[str] = field(default_factory=list)
    begun_notices: list[Notice] = field(default_factory=list)

    def pending_hooks(self, notice: Notice, hooks: Any) -> list[Any]:
        if notice.id in self.completed:
            return []
        done = self.finished.get(notice.id, [])
        return [h for h in hooks if h.name not in done]

    def begin(self, notice: Notice) -> None:
        self.begun.append(notice.id)
        self.begun_notices.append(notice)

    def hook_started(self, notice_id: str, name: str) -> None:
        pass

    def hook_finished(self, notice_id: str, result: Any) -> None:
        self.finished.setdefault(notice_id, []).append(result.name)

    def complete(self, notice_id: str) -> None:
        self.completed.add(notice_id)

    def is_complete(self, notice_id: str) -> bool:
        return notice_id in self.completed

    def unfinished(self, now: float) -> list[Notice]:
        return [n for n in self.begun_notices if n.id not in self.completed and n.deadline > now]

    folds: dict[str, str] = field(default_factory=dict)
    deadlines: dict[str, float] = field(default_factory=dict)

    def end_in_progress(self, now: float) -> Notice | None:
        for n in reversed(self.begun_notices):
            deadline = self.deadlines.get(n.id, n.deadline)
            if n.ends_instance and n.id not in self.folds and deadline > now:
                return n
        return None

    def fold(self, notice: Notice, into: str) -> None:
        self.folds[notice.id] = into
        self.completed.add(notice.id)
        owner = next(n for n in self.begun_notices if n.id == into)
        self.deadlines[into] = min(self.deadlines.get(into, owner.deadline), notice.deadline)


class FakeNotifier:
    def __init__(self, clock: FakeClock, watchdog: float | None = None) -> None:
        self.clock = clock
        self.messages: list[str] = []
        self.pings: list[float] = []
        self._watchdog = watchdog

    def ready(self, status: str | None = None) -> None:
        self.messages.append("READY=1")

    def status(self, text: str) -> None:
        self.messages.append("STATUS=" + text)

    def stopping(self, status: str | None = None) -> None:
        self.messages.append("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        return self._watchdog

    def watchdog_if_due(self) -> None:
        if self._watchdog is None:
            return
        if not self.pings or self.clock.mono - self.pings[-1] >= self._watchdog:
            self.pings.append(self.clock.mono)


def notice(
    kind: str = SPOT_INTERRUPTION,
    nid: str = "n1",
    lead: float = 120.0,
    clock: FakeClock | None = None,
) -> Notice:
    wall = clock.wall if clock else 1_800_000_000.0
    return Notice(
        kind=kind,
        action="terminate",
        raw_time="2027-01-15T08:00:00Z",
        time=wall + lead,
        deadline=wall + lead,
        id=nid,
        source="test",
        ends_instance=kind != REBALANCE_RECOMMENDATION,
    )


class Harness:
    def __init__(
        self,
        scripts: dict[str, list[Any]],
        *,
        hooks: tuple[str, ...] = ("10-a", "20-b"),
        stop_after_polls: int | None = None,
        max_notices: int | None = None,
        watchdog: float | None = None,
        stop_in_hook: str | None = None,
        followups: tuple[Any, ...] = (),
    ) -> None:
        self.clock = FakeClock()
        self.stop = FakeStop(self.clock)
        self.journal = FakeJournal()
        self.notifier = FakeNotifier(self.clock, watchdog)
        self.monitors = [ScriptedMonitor(n, self.clock, s) for n, s in scripts.items()]
        self.hooks = tuple(FakeHook(h, Path("/hooks") / h) for h in hooks)
        self.runs: list[dict[str, Any]] = []
        self.stop_after_polls = stop_after_polls
        self.stop_in_hook = stop_in_hook
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.watcher = Watcher(
            WatchSettings(
                interval=5.0,
                hooks_dir=Path("/hooks"),
                hooks=HookSettings(hook_timeout=30.0, deadline_margin=10.0),
                max_notices=max_notices,
            ),
            monitors=self.monitors,
            read_identity=lambda: Identity(instance_id="i-0abc"),
            journal=self.journal,
            stop=self.stop,
            notifier=self.notifier,
            plan=lambda d: FakePlan(d, self.hooks),
            runner=self.run_hooks,
            hook_environment=lambda base, n, ident, drill=False: {
                "SPOTWATCH_NOTICE_ID": n.id,
                "SPOTWATCH_INSTANCE_ID": ident.instance_id,
                "SPOTWATCH_EVENT": n.kind,
                "SPOTWATCH_DEADLINE": str(int(n.deadline)),
                **dict(n.env),
            },
            fault_types=(Fault,),
            clock=lambda: self.clock.mono,
            wall_clock=lambda: self.clock.wall,
            environ={},
            listener=lambda e, f: self.events.append((e, dict(f))),
            followups=followups,
        )
        original = self.watcher.poll_once

        def counted_poll() -> list[Notice]:
            result = original()
            if self.stop_after_polls is not None and self.watcher.polls >= self.stop_after_polls:
                self.stop.flag = True
            return result

        self.watcher.poll_once = counted_poll  # type: ignore[method-assign]

    def run_hooks(self, hooks: list[Any], env: dict[str, str], **kw: Any) -> list[Any]:
        self.runs.append({"hooks": [h.name for h in hooks], "env": env, **kw})
        results = []
        for hook in hooks:
            if kw["should_stop"]():
                break
            kw["on_start"](hook)
            self.clock.advance(2.0)
            if hook.name == self.stop_in_hook:
                self.stop.flag = True
            result = FakeResult(hook.name)
            kw["on_finish"](result)
            results.append(result)
        return results


def test_polls_on_fixed_ticks_without_drift() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=4)
    assert h.watcher.run() == 0
    starts = [t - h.monitors[0].calls[0] for t in h.monitors[0].calls]
    assert starts == pytest.approx([0.0, 5.0, 10.0, 15.0])
    assert h.notifier.messages[0] == "READY=1" and h.notifier.messages[-1] == "STOPPING=1"


def test_a_notice_runs_the_hooks_once_with_the_deadline_on_the_monotonic_clock() -> None:
    h = Harness({"spot-interruption": [None]}, stop_after_polls=5)
    n = notice(clock=h.clock, lead=100.0)
    # The same notice is shown on every poll after the first.
    h.monitors[0].script = [None, n, n, n, n]
    h.watcher.run()
    assert len(h.runs) == 1
    run = h.runs[0]
    assert run["hooks"] == ["10-a", "20-b"]
    assert run["env"]["SPOTWATCH_NOTICE_ID"] == "n1"
    assert run["env"]["SPOTWATCH_INSTANCE_ID"] == "i-0abc"
    # The notice was made at wall W with deadline W+100, seen one poll (5.3 s) later.
    seen_mono = h.monitors[0].calls[1] + 0.3
    assert run["deadline_mono"] == pytest.approx(seen_mono + 100.0 - 5.3, abs=0.01)
    assert run["settings"] == HookSettings(hook_timeout=30.0, deadline_margin=10.0)
    assert h.journal.completed == {"n1"}
    # Each poll reports itself (for the metrics) before handling what it found.
    assert [e for e, _ in h.events] == [
        "poll.done",
        "poll.done",
        "notice.detected",
        "hook.started",
        "hook.finished",
        "hook.started",
        "hook.finished",
        "notice.handled",
        *["poll.done"] * 3,
    ]


def test_a_completed_notice_in_the_journal_is_not_run_again() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=3)
    n = notice(clock=h.clock)
    h.monitors[0].script = [n, n, n]
    h.journal.completed.add(n.id)
    h.watcher.run()
    assert h.runs == []


def test_resume_runs_only_the_hooks_not_finished() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=2, hooks=("10-a", "20-b", "30-c"))
    n = notice(clock=h.clock)
    h.monitors[0].script = [n, n]
    h.journal.finished[n.id] = ["10-a"]
    h.watcher.run()
    assert [r["hooks"] for r in h.runs] == [["20-b", "30-c"]]


def test_a_stop_during_hooks_lets_the_running_one_finish_and_leaves_the_rest() -> None:
    h = Harness({"spot-interruption": []}, hooks=("10-a", "20-b", "30-c"), stop_in_hook="10-a")
    n = notice(clock=h.clock)
    h.monitors[0].script = [n, n]
    with capture_logs() as logs:
        assert h.watcher.run() == 0
    assert h.journal.finished[n.id] == ["10-a"]
    assert n.id not in h.journal.completed
    assert any(e["event"] == "notice.interrupted" and e["left"] == 2 for e in logs)


def test_each_fault_is_logged_once_when_it_starts_and_once_when_it_clears() -> None:
    script = [Fault("timeout")] * 4 + [Fault("server-error")] * 2 + [None, None]
    h = Harness({"spot-interruption": script}, stop_after_polls=8)
    with capture_logs() as logs:
        h.watcher.run()
    faults = [(e["event"], e.get("kind")) for e in logs if e["event"].startswith("imds.")]
    assert faults == [
        ("imds.fault", "timeout"),
        ("imds.fault", "server-error"),
        ("imds.recovered", "server-error"),
    ]
    assert any(m.startswith("STATUS=watching; IMDS fault") for m in h.notifier.messages)


def test_a_notice_after_faults_is_still_caught() -> None:
    h = Harness({"spot-interruption": []}, max_notices=1)
    n = notice(clock=h.clock)
    h.monitors[0].script = [Fault("unreachable"), Fault("timeout"), n]
    h.watcher.run()
    assert len(h.runs) == 1 and h.watcher.notices_handled == 1


def test_interruption_outranks_rebalance_in_the_same_poll() -> None:
    h = Harness({}, stop_after_polls=1)
    rebalance = notice(kind=REBALANCE_RECOMMENDATION, nid="r1", clock=h.clock)
    spot = notice(kind=SPOT_INTERRUPTION, nid="s1", clock=h.clock)
    h.watcher._monitors = [
        ScriptedMonitor("rebalance", h.clock, [rebalance]),
        ScriptedMonitor("spot", h.clock, [spot]),
    ]
    h.watcher.run()
    assert [r["env"]["SPOTWATCH_NOTICE_ID"] for r in h.runs] == ["s1", "r1"]


def test_watchdog_is_pinged_from_the_loop_while_it_sleeps() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=3, watchdog=2.0)
    h.watcher.run()
    gaps = [b - a for a, b in zip(h.notifier.pings, h.notifier.pings[1:])]
    assert len(h.notifier.pings) >= 5
    # systemd allows 2 intervals (4 s) between pings; the loop keeps well inside.
    assert max(gaps) <= 1.5 * 2.0 + 0.31  # a poll (0.3 s) may sit between two pings
    assert all(s <= 1.0 for s in h.stop.slept)


def test_the_runner_is_asked_to_wake_every_half_ping_interval() -> None:
    """While a hook runs the runner's on_wait pings; waking only when a ping is
    due (or every second) could leave a gap of two intervals, which systemd kills."""
    h = Harness({"spot-interruption": []}, max_notices=1, watchdog=1.0)
    h.monitors[0].script = [notice(clock=h.clock)]
    h.watcher.run()
    assert h.runs[0]["wait_tick"] == 0.5
    pings = len(h.notifier.pings)
    h.clock.advance(1.0)
    h.runs[0]["on_wait"]()  # pings the watchdog when one is due
    assert len(h.notifier.pings) == pings + 1

    no_watchdog = Harness({"spot-interruption": []}, max_notices=1)
    no_watchdog.monitors[0].script = [notice(clock=no_watchdog.clock)]
    no_watchdog.watcher.run()
    assert no_watchdog.runs[0]["wait_tick"] is None  # the runner's own ceiling


def test_identity_fault_gives_unknowns_to_hooks_not_a_crash() -> None:
    h = Harness({"spot-interruption": []}, max_notices=1)

    def broken() -> Identity:
        raise Fault("timeout")

    h.watcher._read_identity = broken
    h.monitors[0].script = [notice(clock=h.clock)]
    h.watcher.run()
    assert h.runs[0]["env"]["SPOTWATCH_INSTANCE_ID"] == "unknown"


def test_an_interruption_cuts_rebalance_hooks_short_and_runs_at_once() -> None:
    h = Harness({}, hooks=("10-a", "20-b", "30-c"), stop_after_polls=2)
    rebalance = notice(kind=REBALANCE_RECOMMENDATION, nid="r1", clock=h.clock)
    spot = notice(kind=SPOT_INTERRUPTION, nid="s1", clock=h.clock)
    # Spot: nothing on the first poll and before the first rebalance hook, then the notice.
    spot_monitor = ScriptedMonitor("spot-interruption", h.clock, [None, None, spot, spot, spot])
    h.watcher._monitors = [spot_monitor, ScriptedMonitor("rebalance", h.clock, [rebalance] * 3)]
    with capture_logs() as logs:
        h.watcher.run()
    assert [(r["env"]["SPOTWATCH_NOTICE_ID"], r["hooks"]) for r in h.runs] == [
        ("r1", ["10-a", "20-b", "30-c"]),
        ("s1", ["10-a", "20-b", "30-c"]),
    ]
    # Only 10-a ran for the rebalance before the interruption took over.
    assert h.journal.finished["r1"] == ["10-a"]
    assert h.journal.finished["s1"] == ["10-a", "20-b", "30-c"]
    assert any(e["event"] == "notice.superseded" and e["left"] == 2 for e in logs)
    # The interruption was handled on the very next poll, with no tick's sleep between.
    assert h.stop.slept == []


def test_a_restart_resumes_an_unfinished_notice_before_the_first_poll() -> None:
    h = Harness({"spot-interruption": [Fault("unreachable")] * 3}, hooks=("10-a", "20-b"),
                stop_after_polls=1)  # fmt: skip
    n = notice(clock=h.clock)
    h.journal.begin(n)
    h.journal.finished[n.id] = ["10-a"]
    stale = notice(nid="old", lead=-5.0, clock=h.clock)  # its deadline has passed
    h.journal.begin(stale)
    h.watcher.run()
    # IMDS is unreachable, yet the half-done notice is finished; the stale one is not.
    assert [(r["env"]["SPOTWATCH_NOTICE_ID"], r["hooks"]) for r in h.runs] == [(n.id, ["20-b"])]
    assert n.id in h.journal.completed


def test_an_unreadable_identity_is_logged_once_and_retried_a_minute_later() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=20)  # 20 polls, 95 s
    calls: list[float] = []

    def broken() -> Identity:
        calls.append(h.clock.mono)
        raise Fault("bad-status")

    h.watcher._read_identity = broken
    with capture_logs() as logs:
        h.watcher.run()
    assert len(calls) == 2 and calls[1] - calls[0] >= 60.0
    assert [e["event"] for e in logs].count("identity.unavailable") == 1
