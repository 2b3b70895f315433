"""One end, one run: notices that announce the same end of the instance share one
run of the hooks (the watcher on a fake clock; the journal's side in test_journal)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from spotwatch.followup import FollowUpBase
from spotwatch.notice import ASG_TERMINATION, REBALANCE_RECOMMENDATION, Notice
from spotwatch.watcher import LOWERED
from tests.watch_helpers import Harness, notice

HOOKS = ("10-a", "20-b", "30-c", "40-d")


def asg(h: Harness, nid: str = "asg1", lead: float = 300.0) -> Notice:
    return dataclasses.replace(
        notice(kind=ASG_TERMINATION, nid=nid, lead=lead, clock=h.clock),
        env=(("SPOTWATCH_ASG_NAME", "web"),),
    )


class RecordingFollowUp(FollowUpBase):
    def __init__(self, kind: str = ASG_TERMINATION) -> None:
        self.kind = kind
        self.calls: list[tuple[str, str]] = []

    def applies(self, n: Notice) -> bool:
        return n.kind == self.kind

    def started(self, n: Notice) -> None:
        self.calls.append(("started", n.id))

    def tick(self, n: Notice) -> None:
        self.calls.append(("tick", n.id))

    def finished(self, n: Notice, results: Any) -> None:
        self.calls.append(("finished", n.id))


def test_garbled_then_proper_spot_notice_runs_the_hooks_once() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=4)
    garbled = dataclasses.replace(notice(nid="garbled", clock=h.clock), problem="not JSON")
    proper = notice(nid="proper", lead=90.0, clock=h.clock)
    h.monitors[0].script = [garbled, proper, proper, proper]
    with capture_logs() as logs:
        h.watcher.run()
    assert len(h.runs) == 1
    assert h.journal.folds == {"proper": "garbled"}
    assert h.journal.deadlines["garbled"] == proper.deadline
    (folded,) = [e for e in logs if e["event"] == "notice.folded"]
    assert folded["into"] == "garbled" and folded["earlier"] is True


def test_spot_then_asg_in_the_next_poll_is_one_run_and_completes_the_lifecycle() -> None:
    followup = RecordingFollowUp()
    h = Harness({"spot-interruption": [], "asg": []}, stop_after_polls=3, followups=(followup,))
    h.monitors[0].script = [notice(nid="spot", clock=h.clock)] * 3
    h.monitors[1].script = [None, asg(h), asg(h)]
    h.watcher.run()
    assert len(h.runs) == 1 and h.runs[0]["env"]["SPOTWATCH_EVENT"] == "spot-interruption"
    assert h.journal.folds == {"asg1": "spot"}
    # The hooks already ran: the Auto Scaling follow-up is started and finished at once.
    assert followup.calls == [("started", "asg1"), ("finished", "asg1")]


def test_seen_in_the_same_poll_the_hooks_get_the_earlier_deadline() -> None:
    h = Harness({"asg": [], "spot-interruption": []}, stop_after_polls=2)
    early = asg(h, lead=60.0)
    spot = notice(nid="spot", lead=120.0, clock=h.clock)
    h.monitors[0].script = [early, early]
    h.monitors[1].script = [spot, spot]
    h.watcher.run()
    (run,) = h.runs
    # The spot notice is the one run (it comes first); the deadline is the ASG one.
    assert run["env"]["SPOTWATCH_EVENT"] == "spot-interruption"
    assert run["env"]["SPOTWATCH_NOTICE_ID"] == "spot"
    assert run["env"]["SPOTWATCH_DEADLINE"] == str(int(early.deadline))
    assert run["env"]["SPOTWATCH_ASG_NAME"] == "web"
    assert h.journal.folds == {"asg1": "spot"}


def test_an_earlier_end_arriving_mid_run_brings_the_deadline_forward_for_the_rest() -> None:
    followup = RecordingFollowUp()
    h = Harness(
        {"asg": [], "spot-interruption": []},
        hooks=HOOKS,
        stop_after_polls=2,
        followups=(followup,),
    )
    first = asg(h, lead=300.0)
    spot = notice(nid="spot", lead=100.0, clock=h.clock)
    # Poll 1: the ASG notice only. Between hooks (once an interval) the spot notice.
    h.monitors[0].script = [first] * 10
    h.monitors[1].script = [None] + [spot] * 10
    h.watcher.run()
    assert [r["hooks"] for r in h.runs] == [list(HOOKS), ["40-d"]]
    assert h.runs[0]["env"]["SPOTWATCH_DEADLINE"] == str(int(first.deadline))
    assert h.runs[1]["env"]["SPOTWATCH_DEADLINE"] == str(int(spot.deadline))
    assert h.runs[1]["env"]["SPOTWATCH_NOTICE_ID"] == "asg1"  # the first notice's
    assert h.journal.folds == {"spot": "asg1"}
    assert h.stop_answers == [LOWERED]  # the runner says why, not "spotwatch is stopping"
    assert h.watcher.notices_handled == 1
    assert followup.calls[0] == ("started", "asg1")
    assert followup.calls[-1] == ("finished", "asg1")


def test_after_the_deadline_a_new_end_is_a_new_run() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=3)
    first = notice(nid="stop1", lead=20.0, clock=h.clock)
    later = notice(nid="stop2", lead=500.0, clock=h.clock)
    h.monitors[0].script = [first, None, later]
    h.clock.advance(0)
    original = h.run_hooks

    def slow(hooks: list[Any], env: dict[str, str], **kw: Any) -> list[Any]:
        h.clock.advance(30.0)  # past the first deadline
        return original(hooks, env, **kw)

    h.watcher._runner = slow
    h.watcher.run()
    assert [r["env"]["SPOTWATCH_NOTICE_ID"] for r in h.runs] == ["stop1", "stop2"]
    assert h.journal.folds == {}


def test_a_rebalance_does_not_fold_and_gives_way_to_an_asg_termination() -> None:
    h = Harness({"rebalance": [], "asg": []}, hooks=HOOKS, stop_after_polls=3)
    rebalance = notice(kind=REBALANCE_RECOMMENDATION, nid="r1", clock=h.clock)
    h.monitors[0].script = [rebalance] * 10
    h.monitors[1].script = [None, asg(h)] + [asg(h)] * 10
    h.watcher.run()
    assert [r["env"]["SPOTWATCH_NOTICE_ID"] for r in h.runs] == ["r1", "asg1"]
    assert h.runs[0]["hooks"] == list(HOOKS) and len(h.runs) == 2
    assert h.journal.folds == {}


def test_followups_see_started_ticks_and_finished() -> None:
    followup = RecordingFollowUp()
    h = Harness({"asg": []}, max_notices=1, followups=(followup,))
    h.monitors[0].script = [asg(h)]
    h.watcher.run()
    assert followup.calls[0] == ("started", "asg1")
    h.runs[0]["on_wait"]()
    assert ("tick", "asg1") in followup.calls
    assert ("finished", "asg1") in followup.calls


def test_a_failing_followup_never_stops_the_hooks() -> None:
    class Broken(RecordingFollowUp):
        def started(self, n: Notice) -> None:
            raise RuntimeError("boom")

    h = Harness({"asg": []}, max_notices=1, followups=(Broken(),))
    h.monitors[0].script = [asg(h)]
    with capture_logs() as logs:
        h.watcher.run()
    assert len(h.runs) == 1 and h.watcher.notices_handled == 1
    assert any(e["event"] == "followup.failed" and e["step"] == "started" for e in logs)


def test_the_idle_status_line_shows_the_next_planned_maintenance() -> None:
    h = Harness({"scheduled-maintenance": []}, stop_after_polls=2)
    note = "next maintenance system-reboot e1 at 2027-01-01 00:00:00Z (hooks from 23:55:00Z)"
    h.monitors[0].status_note = lambda: note  # type: ignore[attr-defined]
    h.watcher.run()
    idle = [m for m in h.notifier.messages if m.startswith("STATUS=watching; last poll")]
    assert idle and all(m.endswith("; " + note) for m in idle)


def test_a_restart_folds_the_same_way(tmp_path: Path) -> None:
    from spotwatch.journal import Journal

    first = Harness({"spot-interruption": [], "asg": []}, stop_after_polls=1, hooks=())
    first.watcher._journal = Journal(tmp_path, wall_clock=lambda: first.clock.wall)
    spot = notice(nid="spot", lead=120.0, clock=first.clock)
    first.monitors[0].script = [spot]
    first.watcher.run()
    assert len(first.runs) == 1 and first.watcher.notices_handled == 1

    # A new daemon (same journal), 30 s later: the spot notice is still out and done,
    # and the Auto Scaling notice that now appears is the same end.
    second = Harness({"spot-interruption": [], "asg": []}, stop_after_polls=2, hooks=())
    second.clock.advance(30.0)
    journal = Journal(tmp_path, wall_clock=lambda: second.clock.wall)
    second.watcher._journal = journal
    second.monitors[0].script = [spot, spot]
    second.monitors[1].script = [None, asg(second)]
    with capture_logs() as logs:
        second.watcher.run()
    assert second.runs == []
    assert journal.folded_into("asg1") == "spot"
    assert any(e["event"] == "notice.folded" for e in logs)


def test_a_stop_that_becomes_a_terminate_gives_the_rest_of_the_hooks_the_terminate() -> None:
    h = Harness({"spot-interruption": [], "asg": []}, hooks=HOOKS, stop_after_polls=2)
    stop = dataclasses.replace(notice(nid="stop", lead=120.0, clock=h.clock), action="stop")
    terminate = asg(h, nid="term", lead=200.0)  # same end, later deadline, action terminate
    h.monitors[0].script = [stop] * 10
    h.monitors[1].script = [None] + [terminate] * 10
    with capture_logs() as logs:
        h.watcher.run()
    assert [r["hooks"] for r in h.runs] == [list(HOOKS), ["40-d"]]
    assert h.runs[0]["env"]["SPOTWATCH_ACTION"] == "stop"
    assert h.runs[1]["env"]["SPOTWATCH_ACTION"] == "terminate"
    assert h.runs[1]["env"]["SPOTWATCH_NOTICE_ID"] == "stop"
    assert h.journal.folds == {"term": "stop"}
    assert [e["action"] for e in logs if e["event"] == "notice.action_changed"] == ["terminate"]


def test_the_status_line_says_a_handled_or_folded_notice_is_still_out() -> None:
    h = Harness({"spot-interruption": [], "asg": []}, stop_after_polls=4)
    spot = notice(nid="spot", clock=h.clock)
    # Poll 1 runs the hooks; poll 2 folds the ASG notice in; then only it is out.
    h.monitors[0].script = [spot, spot, None, None]
    h.monitors[1].script = [None, asg(h), asg(h), asg(h)]
    h.watcher.run()
    statuses = [m for m in h.notifier.messages if "still out" in m]
    assert statuses, h.notifier.messages
    assert "spot-interruption terminate still out, handled (2/2 hooks ok)" in statuses[0]
    assert "asg-termination terminate still out, folded into spot" in statuses[-1]
    assert "(2/2 hooks ok)" in statuses[-1] and "no notice" not in statuses[-1]


def test_a_restart_with_a_handled_notice_still_out_says_so_once() -> None:
    h = Harness({"spot-interruption": []}, stop_after_polls=3)
    spot = notice(nid="spot", clock=h.clock)
    h.journal.begun_notices.append(spot)
    h.journal.finished["spot"] = ["10-a", "20-b"]
    h.journal.completed.add("spot")  # a previous run handled it
    h.monitors[0].script = [spot] * 3
    with capture_logs() as logs:
        h.watcher.run()
    (still,) = [e for e in logs if e["event"] == "notice.still_out"]
    assert still["notice_id"] == "spot" and still["hooks_done"] == 2
    assert h.runs == []
    assert any("(2/2 hooks ok)" in m for m in h.notifier.messages)


def test_after_a_resumed_run_the_status_line_counts_every_hook_of_the_notice() -> None:
    h = Harness({"spot-interruption": []}, hooks=HOOKS, stop_after_polls=1)
    spot = notice(nid="spot", clock=h.clock)
    h.journal.begun_notices.append(spot)
    h.journal.finished["spot"] = ["10-a", "20-b", "30-c"]  # a previous run ran three
    h.monitors[0].script = [None]
    h.watcher.run()
    assert [r["hooks"] for r in h.runs] == [["40-d"]]
    assert any("handled spot-interruption terminate (4/4 hooks ok)" in m
               for m in h.notifier.messages), h.notifier.messages  # fmt: skip


def test_a_hooks_dir_that_never_comes_back_leaves_the_notice_open() -> None:
    from tests.watch_helpers import FakePlan

    h = Harness({"spot-interruption": []}, stop_after_polls=3)
    spot = notice(nid="spot", lead=30.0, clock=h.clock)
    h.monitors[0].script = [spot] * 3
    looks: list[int] = []

    def missing(directory: Path) -> FakePlan:
        looks.append(1)
        return FakePlan(directory, (), problem="hooks directory gone", missing=True)

    h.watcher._plan = missing  # type: ignore[assignment]
    with capture_logs() as logs:
        h.watcher.run()
    events = [e["event"] for e in logs]
    assert "hooks.dir_missing" in events and "notice.not_handled" in events
    assert "notice.handled" not in events
    assert h.runs == [] and "spot" not in h.journal.completed  # not closed
    assert h.journal.begun == ["spot"]  # recorded: a restart in time resumes it
    # Looked again about once a second until the deadline less the margin (20 s).
    assert 15 <= len(looks) <= 25
    assert events.count("hooks.dir_missing") == 1  # later polls do not wait again
    assert any("not handled: no hook ran" in m for m in h.notifier.messages)
