"""The state directory: made safely whatever the umask, checked with the right fix,
locked for one daemon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from spotwatch import statedir
from spotwatch.errors import UsageError
from spotwatch.journal import JOURNAL_NAME, Journal


def test_missing_parents_are_0755_and_the_state_dir_0700_even_under_umask_000(
    tmp_path: Path,
) -> None:
    target = tmp_path / "a" / "b" / "state"
    old = os.umask(0)
    try:
        statedir.make(target)
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o755
    assert target.stat().st_mode & 0o777 == 0o700
    statedir.make(target)  # already there: nothing to do


def test_a_read_only_state_dir_is_called_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.statvfs

    class ReadOnly:
        def __init__(self, result: Any) -> None:
            self._result = result
            self.f_flag = result.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)))
    problem = statedir.unusable(tmp_path)
    assert problem is not None and "read-only file system" in problem
    assert "owner" not in problem


def test_a_usable_state_dir_has_no_problem(tmp_path: Path) -> None:
    assert statedir.unusable(tmp_path) is None
    (tmp_path / "file").write_text("")
    problem = statedir.unusable(tmp_path / "file")
    assert problem is not None and "not a directory" in problem


def test_the_lock_is_exclusive_names_the_holder_and_frees_on_release(tmp_path: Path) -> None:
    lock = statedir.acquire(tmp_path)
    assert (tmp_path / statedir.LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(UsageError) as err:
        statedir.acquire(tmp_path)  # flock locks are per open file: this one conflicts
    assert f"PID {os.getpid()}" in str(err.value) and err.value.exit_code == 2
    lock.release()
    statedir.acquire(tmp_path).release()


def test_an_unreadable_journal_is_not_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.symlink_to(path)  # ELOOP on open: unreadable, not bad JSON
    with capture_logs() as logs:
        journal = Journal(tmp_path)
    (event,) = [e for e in logs if e["event"].startswith("journal.")]
    assert event["event"] == "journal.unreadable" and event["log_level"] == "error"
    assert "chown" in event["advice"] and event["moved_to"]
    assert not journal.is_known("anything")
