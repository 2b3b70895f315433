"""The way back, on the fake clock: the resume hooks run once for every end that did
not come (each trigger), with SPOTWATCH_PHASE=resume and the original's variables."""

from __future__ import annotations

import dataclasses
from typing import Any

from spotwatch import gce_upcoming, maintenance, monitors
from spotwatch.boot import PreviousBoot
from spotwatch.clouds import azure, gcp
from spotwatch.notice import REBALANCE_RECOMMENDATION, SCHEDULED_MAINTENANCE, Notice
from spotwatch.resume import WITHDRAWABLE_SOURCES, Withdrawals, resume_notice
from tests.test_shutdown_watch import FakeBoot, FakeShutdown
from tests.watch_helpers import Harness, notice


def _from(source: str, kind: str = SCHEDULED_MAINTENANCE, action: str = "reboot",
          nid: str = "m1", ends: bool = False, h: Harness | None = None) -> Notice:  # fmt: skip
    return dataclasses.replace(
        notice(kind, nid, clock=h.clock if h else None), source=source, action=action,
        ends_instance=ends, env=(("SPOTWATCH_MAINTENANCE_EVENT_ID", "ev-1"),),
    )  # fmt: skip


def _resume_runs(h: Harness) -> list[dict[str, Any]]:
    return [r for r in h.runs if r["env"].get("SPOTWATCH_PHASE") == "resume"]


def test_the_withdrawable_sources_are_the_monitors_own() -> None:
    assert {
        monitors.SOURCE_REBALANCE, maintenance.SOURCE_SCHEDULED, gcp.SOURCE_MAINTENANCE,
        gce_upcoming.SOURCE_UPCOMING, azure.SOURCE,
    } == WITHDRAWABLE_SOURCES  # fmt: skip


def test_withdrawals_wait_for_two_empty_answers_and_forget_after_an_end() -> None:
    book = Withdrawals()
    reb = _from(monitors.SOURCE_REBALANCE, REBALANCE_RECOMMENDATION, "rebalance", "r1")
    book.handled("rebalance", reb)
    assert book.observe("rebalance", reb) is None
    assert book.observe("rebalance", None) is None
    assert book.observe("rebalance", reb) is None  # back again: the count starts over
    assert book.observe("rebalance", None) is None
    assert book.observe("rebalance", None) == reb
    assert book.observe("rebalance", None) is None  # once
    book.handled("rebalance", reb)
    book.handled("spot", notice())  # an interruption followed
    assert book.observe("rebalance", None) is None and not book.awaiting


def test_resume_notice_keeps_the_originals_variables() -> None:
    original = _from(maintenance.SOURCE_SCHEDULED)
    back = resume_notice(original, 5.0)
    env = dict(back.env)
    assert back.id == "resume-m1" and back.kind == original.kind and not back.ends_instance
    assert env["SPOTWATCH_PHASE"] == "resume" and env["SPOTWATCH_NOTICE_ID"] == "m1"
    assert env["SPOTWATCH_MAINTENANCE_EVENT_ID"] == "ev-1"


def _withdrawn(source: str, kind: str, action: str, ends: bool = False) -> Harness:
    h = Harness({"src": []}, resume_hooks=("10-back",), stop_after_polls=6)
    n = _from(source, kind, action, ends=ends, h=h)
    h.monitors[0].script = [n, n, None, None, None, None]
    h.watcher.run()
    return h


def test_a_withdrawn_rebalance_recommendation_runs_the_resume_hooks_once() -> None:
    h = _withdrawn(monitors.SOURCE_REBALANCE, REBALANCE_RECOMMENDATION, "rebalance")
    assert h.runs[0]["env"].get("SPOTWATCH_PHASE") is None  # the Harness env: hooks.d's run
    back = _resume_runs(h)
    assert len(back) == 1 and back[0]["hooks"] == ["10-back"]
    assert back[0]["env"]["SPOTWATCH_EVENT"] == REBALANCE_RECOMMENDATION
    assert back[0]["env"]["SPOTWATCH_NOTICE_ID"] == "m1"
    assert h.journal.completed >= {"m1", "resume-m1"}
    assert [e for e, _ in h.events].count("resume.handled") == 1


def test_a_rebalance_followed_by_an_interruption_never_resumes() -> None:
    h = Harness({"rebalance": [], "spot": []}, resume_hooks=("10-back",), stop_after_polls=6)
    reb = _from(monitors.SOURCE_REBALANCE, REBALANCE_RECOMMENDATION, "rebalance", "r1", h=h)
    h.monitors[0].script = [reb, None, None, None, None, None]
    h.monitors[1].script = [None, notice(nid="s1", clock=h.clock)]
    h.watcher.run()
    assert _resume_runs(h) == []


def test_a_canceled_or_completed_maintenance_event_resumes() -> None:
    h = _withdrawn(maintenance.SOURCE_SCHEDULED, SCHEDULED_MAINTENANCE, "reboot")
    assert len(_resume_runs(h)) == 1
    assert _resume_runs(h)[0]["env"]["SPOTWATCH_MAINTENANCE_EVENT_ID"] == "ev-1"


def test_a_completed_google_migration_resumes() -> None:
    h = _withdrawn(gcp.SOURCE_MAINTENANCE, SCHEDULED_MAINTENANCE, "migrate")
    assert len(_resume_runs(h)) == 1


def test_an_azure_event_gone_with_the_vm_still_running_resumes() -> None:
    h = _withdrawn(azure.SOURCE, "spot-interruption", "terminate", ends=True)
    assert len(_resume_runs(h)) == 1


def test_a_spot_notice_that_vanishes_is_not_a_way_back() -> None:
    h = _withdrawn(monitors.SOURCE_INSTANCE_ACTION, "spot-interruption", "terminate", ends=True)
    assert _resume_runs(h) == []


def test_without_a_resume_dir_nothing_runs_on_the_way_back() -> None:
    h = Harness({"src": []}, stop_after_polls=6)
    n = _from(monitors.SOURCE_REBALANCE, REBALANCE_RECOMMENDATION, "rebalance", h=h)
    h.monitors[0].script = [n, None, None, None]
    h.watcher.run()
    assert len(h.runs) == 1


def _boot_after(end: Notice, instance_id: str | None = "i-0abc") -> Harness:
    previous = PreviousBoot("old-boot", instance_id, end, {"kind": "reboot", "state": "done"})
    boot = FakeBoot(previous)
    h = Harness({"spot": []}, resume_hooks=("10-back",), stop_after_polls=1, boot=boot)
    h.watcher.run()
    return h


def test_back_after_a_handled_stop_notice_on_a_new_boot_of_the_same_instance() -> None:
    stop = dataclasses.replace(notice(nid="stop-1"), action="stop")
    h = _boot_after(stop)
    back = _resume_runs(h)
    assert len(back) == 1 and back[0]["env"]["SPOTWATCH_NOTICE_ID"] == "stop-1"
    assert back[0]["env"]["SPOTWATCH_EVENT"] == "spot-interruption"
    assert ("resumed",) in h.watcher._boot.calls  # type: ignore[union-attr]


def test_a_hibernate_or_a_reboot_notice_comes_back_the_same_way() -> None:
    for action in ("hibernate", "reboot"):
        h = _boot_after(dataclasses.replace(notice(nid=f"{action}-1"), action=action))
        assert len(_resume_runs(h)) == 1


def test_a_shutdown_run_followed_by_a_boot_of_the_same_instance_resumes() -> None:
    end = Notice("shutdown", "reboot", "2026-12-05T09:00:00Z", None, 1.0, "sd-1", "shutdown",
                 env=(("SPOTWATCH_SHUTDOWN", "reboot"),))  # fmt: skip
    back = _resume_runs(_boot_after(end))
    assert len(back) == 1
    assert back[0]["env"]["SPOTWATCH_EVENT"] == "shutdown"
    assert back[0]["env"]["SPOTWATCH_SHUTDOWN"] == "reboot"


def test_another_instance_on_the_same_volume_does_not_resume() -> None:
    assert _resume_runs(_boot_after(notice(nid="x"), instance_id="i-0other")) == []


def test_the_resume_runs_once_even_if_the_boot_is_seen_again() -> None:
    end = dataclasses.replace(notice(nid="stop-2"), action="stop")
    previous = PreviousBoot("old", "i-0abc", end, None)
    h = Harness({"spot": []}, resume_hooks=("10-back",), stop_after_polls=1,
                boot=FakeBoot(previous))  # fmt: skip
    h.watcher.run()
    h.watcher.come_back(end, "again")
    assert len(_resume_runs(h)) == 1


def test_a_stop_during_the_resume_hooks_leaves_the_rest_for_the_next_start() -> None:
    end = dataclasses.replace(notice(nid="stop-3"), action="stop")
    previous = PreviousBoot("old", "i-0abc", end, None)
    h = Harness({"spot": []}, resume_hooks=("10-back", "20-more"), stop_in_hook="10-back",
                boot=FakeBoot(previous), shutdown=FakeShutdown(kind=None))  # fmt: skip
    h.watcher.run()
    assert h.journal.finished["resume-stop-3"] == ["10-back"]
    assert "resume-stop-3" not in h.journal.completed
    # The next start resumes the resume run from the journal, with the resume hooks.
    h.stop.flag = False
    h.stop_in_hook = None
    h.stop_after_polls = h.watcher.polls + 1
    h.watcher.run()
    assert h.journal.finished["resume-stop-3"] == ["10-back", "20-more"]
    assert h.runs[-1]["env"]["SPOTWATCH_PHASE"] == "resume"
