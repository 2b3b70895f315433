"""The journal: hooks run once per notice, across restarts, written atomically."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from spotwatch.hooks import Hook
from spotwatch.journal import JOURNAL_NAME, KEEP_NOTICES, Journal, JournalError
from spotwatch.notice import Notice
from spotwatch.runner import HookResult

HOOKS = [Hook(name, Path("/etc/spotwatch/hooks.d") / name) for name in ("10-a", "20-b", "30-c")]


def notice(notice_id: str = "n1") -> Notice:
    return Notice(
        kind="spot-interruption",
        action="terminate",
        raw_time="2026-11-26T03:00:25Z",
        time=1795662025.0,
        deadline=1795662025.0,
        id=notice_id,
        source="instance-action",
    )


def result(name: str, outcome: str = "ok", description: str = "exit 0") -> HookResult:
    return HookResult(name, f"/x/{name}", 1.0, 2.0, outcome, 0, None, description)


def names(hooks: list[Hook]) -> list[str]:
    return [h.name for h in hooks]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_new_notice_runs_all_and_a_restart_resumes_with_the_unfinished(state_dir: Path) -> None:
    journal = Journal(state_dir)
    n = notice()
    assert names(journal.pending_hooks(n, HOOKS)) == ["10-a", "20-b", "30-c"]
    journal.begin(n)
    journal.hook_started(n.id, "10-a")
    journal.hook_finished(n.id, result("10-a", "failed", "exit 3"))
    journal.hook_started(n.id, "20-b")
    # spotwatch dies here, with 20-b running

    restarted = Journal(state_dir)
    assert restarted.is_known(n.id) and not restarted.is_complete(n.id)
    assert restarted.running_hook(n.id) == "20-b"
    # A failed hook finished: it does not run again. The interrupted one does.
    assert names(restarted.pending_hooks(n, HOOKS)) == ["20-b", "30-c"]
    assert restarted.finished_hooks(n.id) == {
        "10-a": {"outcome": "failed", "description": "exit 3", "ended_at": 2.0}
    }
    restarted.begin(n)  # the watcher calls begin again after a restart: progress is kept
    assert names(restarted.pending_hooks(n, HOOKS)) == ["20-b", "30-c"]


def test_completed_notice_never_reruns_even_after_restart(state_dir: Path) -> None:
    journal = Journal(state_dir)
    n = notice()
    journal.begin(n)
    for hook in HOOKS:
        journal.hook_started(n.id, hook.name)
        journal.hook_finished(n.id, result(hook.name))
    journal.complete(n.id)
    assert journal.pending_hooks(n, HOOKS) == []
    again = Journal(state_dir)
    assert again.is_complete(n.id)
    assert again.pending_hooks(n, HOOKS) == []
    assert again.running_hook(n.id) is None
    # New hooks dropped in after completion do not run for the old notice either.
    assert again.pending_hooks(n, [*HOOKS, Hook("40-new", Path("/x/40-new"))]) == []


def test_a_different_notice_runs_everything_again(state_dir: Path) -> None:
    journal = Journal(state_dir)
    first = notice("n1")
    journal.begin(first)
    journal.hook_finished(first.id, result("10-a"))
    journal.complete(first.id)
    second = notice("n2")
    assert names(Journal(state_dir).pending_hooks(second, HOOKS)) == ["10-a", "20-b", "30-c"]


def test_completed_ids_are_kept_for_the_last_notices_only(state_dir: Path) -> None:
    journal = Journal(state_dir)
    for i in range(KEEP_NOTICES + 5):
        journal.begin(notice(f"id-{i}"))
        journal.complete(f"id-{i}")
    reopened = Journal(state_dir)
    assert not reopened.is_known("id-0") and not reopened.is_known("id-4")
    assert reopened.is_complete("id-5") and reopened.is_complete(f"id-{KEEP_NOTICES + 4}")
    data = json.loads((state_dir / JOURNAL_NAME).read_text())
    assert len(data["notices"]) == KEEP_NOTICES


def test_file_records_the_notice(state_dir: Path) -> None:
    journal = Journal(state_dir, wall_clock=lambda: 42.0)
    journal.begin(notice())
    data = json.loads((state_dir / JOURNAL_NAME).read_text())
    assert data["version"] == 1
    assert data["notices"]["n1"] == {
        "kind": "spot-interruption",
        "action": "terminate",
        "raw_time": "2026-11-26T03:00:25Z",
        "deadline": 1795662025.0,
        "source": "instance-action",
        "ends_instance": True,
        "env": [],
        "begun_at": 42.0,
        "finished": {},
        "running": None,
        "complete": False,
    }


def test_modes_of_state_dir_and_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "var" / "lib" / "spotwatch"
    journal = Journal(state_dir)
    journal.begin(notice())
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state_dir / JOURNAL_NAME).st_mode) == 0o600
    assert sorted(os.listdir(state_dir)) == [JOURNAL_NAME]  # no temp files left


CRASH_BETWEEN_WRITE_AND_RENAME = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from spotwatch.journal import Journal
    from spotwatch.runner import HookResult

    journal = Journal(Path(sys.argv[1]))
    def crash(src, dst):
        # The temp file is written and fsynced; die before the rename.
        assert Path(src).read_bytes().startswith(b"{")
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = crash
    journal.hook_finished("n1", HookResult("20-b", "/x/20-b", 1.0, 2.0, "ok", 0, None, "exit 0"))
    """
)


def test_crash_between_temp_write_and_rename_leaves_the_old_journal(state_dir: Path) -> None:
    journal = Journal(state_dir)
    journal.begin(notice())
    journal.hook_finished("n1", result("10-a"))
    before = (state_dir / JOURNAL_NAME).read_bytes()

    proc = subprocess.run(
        [sys.executable, "-c", CRASH_BETWEEN_WRITE_AND_RENAME, str(state_dir)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    assert (state_dir / JOURNAL_NAME).read_bytes() == before
    leftovers = [n for n in os.listdir(state_dir) if n != JOURNAL_NAME]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")  # the crash's temp file

    with capture_logs() as logs:
        reopened = Journal(state_dir)
    assert not any(e["event"] == "journal.corrupt" for e in logs)
    assert names(reopened.pending_hooks(notice(), HOOKS)) == ["20-b", "30-c"]
    assert os.listdir(state_dir) == [JOURNAL_NAME]  # stale temp cleaned up


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"\xff\xfe\x00", b"[]", b'{"version": 99, "notices": {}}',
     b'{"version": 1, "notices": {"n1": {"finished": []}}}', b'{"version": 1}'],
)
def test_corrupt_journal_is_moved_aside_and_replaced(state_dir: Path, content: bytes) -> None:
    state_dir.mkdir(mode=0o700)
    (state_dir / JOURNAL_NAME).write_bytes(content)
    with capture_logs() as logs:
        journal = Journal(state_dir, wall_clock=lambda: 1234.0)
    corrupt = [e for e in logs if e["event"] == "journal.corrupt"]
    assert len(corrupt) == 1
    event = corrupt[0]
    assert event["log_level"] == "error"
    assert event["path"] == str(state_dir / JOURNAL_NAME)
    aside = state_dir / f"{JOURNAL_NAME}.corrupt-1234"
    assert event["moved_to"] == str(aside) and "advice" in event
    assert aside.read_bytes() == content
    # Fresh journal: the notice's hooks run (again), and it is writable.
    n = notice()
    assert names(journal.pending_hooks(n, HOOKS)) == ["10-a", "20-b", "30-c"]
    journal.begin(n)
    assert Journal(state_dir).is_known(n.id)


def test_journal_that_is_a_directory_is_moved_aside(state_dir: Path) -> None:
    (state_dir / JOURNAL_NAME).mkdir(parents=True)
    with capture_logs() as logs:
        journal = Journal(state_dir)
    assert [e["event"] for e in logs] == ["journal.corrupt"]
    journal.begin(notice())
    assert Journal(state_dir).is_known("n1")


def test_state_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match=r"cannot create state directory .*--state-dir"):
        Journal(blocker / "state")
    with pytest.raises(JournalError, match="state directory"):
        Journal(blocker)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(JournalError, match="not writable"):
        Journal(locked)


def test_write_failure_later_is_logged_once_and_the_journal_goes_on(state_dir: Path) -> None:
    journal = Journal(state_dir)
    n = notice()
    journal.begin(n)
    # The state directory vanishes under us (say, an operator's rm -rf).
    (state_dir / JOURNAL_NAME).unlink()
    state_dir.rmdir()
    state_dir.write_text("not a directory any more")
    with capture_logs() as logs:
        journal.hook_started(n.id, "10-a")
        journal.hook_finished(n.id, result("10-a"))
    failures = [e for e in logs if e["event"] == "journal.write_failed"]
    assert len(failures) == 1 and "advice" in failures[0]
    assert names(journal.pending_hooks(n, HOOKS)) == ["20-b", "30-c"]  # kept in memory
    state_dir.unlink()
    state_dir.mkdir()
    with capture_logs() as logs:
        journal.complete(n.id)
    assert [e["event"] for e in logs] == ["journal.write_recovered"]
    assert Journal(state_dir).is_complete(n.id)


def test_unknown_notice_id_is_tolerated(state_dir: Path) -> None:
    journal = Journal(state_dir)
    with capture_logs() as logs:
        journal.hook_finished("never-begun", result("10-a"))
    assert [e["event"] for e in logs] == ["journal.unknown_notice"]
    assert Journal(state_dir).finished_hooks("never-begun")["10-a"]["outcome"] == "ok"


def test_unfinished_lists_begun_notices_whose_deadline_is_ahead(state_dir: Path) -> None:
    journal = Journal(state_dir)
    ahead = notice()
    journal.begin(ahead)
    restarted = Journal(state_dir)
    found = restarted.unfinished(ahead.deadline - 1)
    assert [(n.id, n.kind, n.action, n.raw_time, n.deadline) for n in found] == [
        (ahead.id, ahead.kind, ahead.action, ahead.raw_time, ahead.deadline)
    ]
    assert restarted.unfinished(ahead.deadline + 1) == []
    restarted.complete(ahead.id)
    assert Journal(state_dir).unfinished(ahead.deadline - 1) == []


def test_a_fold_is_recorded_and_survives_a_restart(state_dir: Path) -> None:
    import dataclasses

    journal = Journal(state_dir, wall_clock=lambda: 100.0)
    first = dataclasses.replace(notice("spot"), deadline=1000.0)
    journal.begin(first)
    journal.hook_finished(first.id, result("10-a"))
    asg = dataclasses.replace(
        notice("asg"), kind="asg-termination", deadline=400.0, env=(("SPOTWATCH_ASG_NAME", "web"),)
    )
    assert journal.end_in_progress(100.0) == dataclasses.replace(first, source="journal", time=None)
    journal.fold(asg, into=first.id)

    restarted = Journal(state_dir)
    assert restarted.is_complete("asg") and restarted.folded_into("asg") == "spot"
    assert restarted.folded_into("spot") is None
    (resumed,) = restarted.unfinished(100.0)
    assert resumed.id == "spot" and resumed.deadline == 400.0  # the earlier of the two
    assert names(restarted.pending_hooks(resumed, HOOKS)) == ["20-b", "30-c"]
    # The owner, not the folded notice, is the end in progress, until the latest
    # deadline of the notices in it (the spot notice's 1000 s); then none.
    owner = restarted.end_in_progress(999.0)
    assert owner is not None and owner.id == "spot"
    assert restarted.end_in_progress(1000.0) is None


def test_trimming_keeps_ends_still_ahead_and_what_they_fold_into(state_dir: Path) -> None:
    import dataclasses

    now = [1000.0]
    journal = Journal(state_dir, wall_clock=lambda: now[0])
    # An end whose own deadline has passed, and notices whose time moves on every
    # poll folded into it, far more than the journal keeps.
    owner = dataclasses.replace(notice("owner"), deadline=900.0)
    journal.begin(owner)
    journal.complete(owner.id)
    for i in range(KEEP_NOTICES + 30):
        now[0] = 1000.0 + i
        journal.fold(dataclasses.replace(notice(f"moved-{i}"), deadline=now[0] + 120), owner.id)
    reopened = Journal(state_dir, wall_clock=lambda: now[0])
    assert reopened.is_complete("owner")  # others fold into it: kept
    assert not reopened.is_known("moved-0")  # passed and nobody's owner: trimmed
    assert reopened.is_known(f"moved-{KEEP_NOTICES + 29}")
    # Still the end in progress, though its own deadline passed long ago.
    in_progress = reopened.end_in_progress(now[0])
    assert in_progress is not None and in_progress.id == "owner"
    # A notice whose deadline is ahead is never trimmed, however many come after.
    fresh = Journal(tmp := state_dir / "second", wall_clock=lambda: 0.0)
    assert tmp.is_dir()
    for i in range(KEEP_NOTICES + 10):
        fresh.begin(dataclasses.replace(notice(f"ahead-{i}"), deadline=50.0))
    assert fresh.is_known("ahead-0") and fresh.is_known(f"ahead-{KEEP_NOTICES + 9}")


def test_a_rebalance_is_no_end_in_progress(state_dir: Path) -> None:
    import dataclasses

    journal = Journal(state_dir)
    journal.begin(
        dataclasses.replace(
            notice("r"), kind="rebalance-recommendation", deadline=1e12, ends_instance=False
        )
    )
    assert journal.end_in_progress(0.0) is None
    (resumed,) = journal.unfinished(0.0)
    assert resumed.ends_instance is False
