"""hooks.log_plan: the one wording of what a hook plan will not run (daemon and fleet watch)."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from spotwatch.hooks import log_plan, plan_hooks
from spotwatch.logs import get_logger


def _hook(path: Path, mode: int) -> None:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)


def test_refused_skipped_and_ignored_entries_each_at_their_level(tmp_path: Path) -> None:
    _hook(tmp_path / "10-ok", 0o755)
    _hook(tmp_path / "20-writable", 0o777)  # anyone may rewrite it: refused
    _hook(tmp_path / "30-plain", 0o644)  # not executable: skipped
    _hook(tmp_path / "40-old~", 0o755)  # a backup file: ignored
    tmp_path.chmod(0o755)
    plan = plan_hooks(tmp_path)
    with capture_logs() as logs:
        log_plan(get_logger(), plan)
    said = {(e["event"], e["hook"], e["log_level"]) for e in logs}
    assert said == {
        ("hook.refused", "20-writable", "error"),
        ("hook.skipped", "30-plain", "warning"),
        ("hook.ignored", "40-old~", "debug"),
    }
    assert all(e["fix"] and e["reason"] for e in logs)  # each says what to do


def test_an_unusable_directory_is_one_error_with_its_fix(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    plan = plan_hooks(tmp_path)
    assert plan.problem
    with capture_logs() as logs:
        log_plan(get_logger(), plan)
    (refused,) = [e for e in logs if e["event"] == "hooks.refused"]
    assert refused["log_level"] == "error"
    assert refused["directory"] == str(tmp_path) and refused["fix"] == plan.fix
