"""``spotwatch drill --event shutdown`` and ``--resume``: a shutdown with no notice, and
the way back, on the same timeline with PASS/FAIL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import hooks_dir_fixture as hooks_dir_fixture
from tests.helpers import make_hooks_dir, write_hook
from tests.test_drill import drill

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ENV = 'echo "event=$SPOTWATCH_EVENT shutdown=$SPOTWATCH_SHUTDOWN phase=$SPOTWATCH_PHASE"'


def test_a_shutdown_with_no_notice_runs_the_hooks_as_shutdown(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-env", ENV)
    proc = drill("--hooks-dir", str(hooks_dir), "--event", "shutdown", "--lead", "40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "system shutdown (poweroff) with no notice" in proc.stdout
    assert "| out: event=shutdown shutdown=poweroff phase=end" in proc.stdout
    assert "PASS" in proc.stdout


def test_the_way_back_runs_the_resume_hooks_after_any_event(
    hooks_dir: Path, tmp_path: Path
) -> None:
    resume_dir = make_hooks_dir(tmp_path, "resume.d")
    write_hook(hooks_dir, "10-env", ENV)
    write_hook(resume_dir, "10-back", ENV + '\necho "id=$SPOTWATCH_NOTICE_ID"')
    proc = drill("--hooks-dir", str(hooks_dir), "--event", "rebalance", "--resume",
                 "--resume-dir", str(resume_dir), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["resume_seen"] is not None
    [end], [back] = report["hooks"], report["resume_hooks"]
    assert end["name"] == "10-env" and back["name"] == "10-back" and back["ok"]
    lines = [o["text"] for o in back["output"]]
    assert lines[0] == "event=rebalance-recommendation shutdown= phase=resume"
    assert lines[1].startswith("id=") and not lines[1].startswith("id=resume-")


def test_a_failing_resume_hook_fails_the_drill(hooks_dir: Path, tmp_path: Path) -> None:
    resume_dir = make_hooks_dir(tmp_path, "resume.d")
    write_hook(hooks_dir, "10-fine", "true")
    write_hook(resume_dir, "10-broken", "exit 3")
    proc = drill("--hooks-dir", str(hooks_dir), "--event", "shutdown", "--resume",
                 "--resume-dir", str(resume_dir))  # fmt: skip
    assert proc.returncode == 1
    assert "way back" in proc.stdout and "FAIL 10-broken: exit 3" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "FAIL: resume 10-broken: exit 3"


def test_a_missing_resume_directory_is_one_line_and_exit_2(
    hooks_dir: Path, tmp_path: Path
) -> None:
    write_hook(hooks_dir, "10-fine", "true")
    missing = tmp_path / "none"
    proc = drill("--hooks-dir", str(hooks_dir), "--resume", "--resume-dir", str(missing))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert f"resume hooks directory {missing} does not exist" in proc.stderr
