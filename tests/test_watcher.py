"""The watch loop on a fake clock: no sleeping, no network, no processes."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from spotwatch.notice import REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION, Identity
from spotwatch.runner import HookSettings
from spotwatch.watcher import SUPERSEDED
from tests.watch_helpers import (
    Fault,
    Harness,
    ScriptedMonitor,
    notice,
)


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
    assert h.stop_answers == [SUPERSEDED]
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
