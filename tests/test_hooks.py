"""Hook discovery: names, order, symlinks, execute bits, ownership and modes, environment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spotwatch.hooks import (
    IGNORED,
    IGNORED_SUFFIXES,
    REFUSED,
    SKIPPED,
    Hook,
    HookPlan,
    Rejected,
    check_hook,
    name_problem,
    notice_environment,
    plan_hooks,
    safety_problem,
)
from spotwatch.notice import Identity, Notice
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture

OTHER_UID = 4242



def make_hook(directory: Path, name: str, mode: int = 0o755, body: str = "exit 0\n") -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def by_name(plan: HookPlan) -> dict[str, Rejected]:
    return {r.name: r for r in plan.rejected}


# --- names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["10-checkpoint", "50-ship-logs.sh", "90_notify", "A", "0", "x.y.z", "a-", "Z9.sh"],
)
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("suffix", IGNORED_SUFFIXES)
def test_every_backup_suffix_is_ignored(suffix: str) -> None:
    problem = name_problem("10-checkpoint" + suffix)
    assert problem is not None and suffix in problem


def test_suffix_list_matches_spec() -> None:
    assert set(IGNORED_SUFFIXES) == {
        "~", ".bak", ".orig", ".swp", ".disabled", ".dpkg-old", ".dpkg-new",
        ".dpkg-dist", ".dpkg-tmp", ".rpmnew", ".rpmsave", ".rpmorig",
    }  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [".hidden", "-dash", "_under", "has space", "tab\there", "caf\u00e9", "\u00e9t\u00e9",
     "semi;colon", "a/b", "", ".", "..", "x$y", "10-a\n"],
)
def test_bad_names(name: str) -> None:
    assert name_problem(name) is not None


def test_a_suffix_only_counts_at_the_end() -> None:
    assert name_problem("10-bak.sh") is None
    assert name_problem("10.swp.sh") is None


# --- safety (pure) ---------------------------------------------------------


def test_safety_problem() -> None:
    allowed = frozenset({0, 1000})
    assert safety_problem(0o100755, 0, allowed) is None
    assert safety_problem(0o100775, 0, allowed) == "group-writable"
    assert safety_problem(0o100757, 1000, allowed) == "world-writable"
    assert safety_problem(0o100777, 5, allowed) == "group-writable, world-writable, owned by uid 5"
    assert safety_problem(0o041777, 0, allowed) == "group-writable, world-writable"


# --- plan: order -------------------------------------------------------------


def test_byte_order_uppercase_before_lowercase(hooks_dir: Path) -> None:
    names = ["90-notify", "50-B.sh", "10-a", "50-a.sh", "Zeta", "alpha", "100-x", "9"]
    for name in names:
        make_hook(hooks_dir, name)
    plan = plan_hooks(hooks_dir)
    assert [h.name for h in plan.hooks] == [
        "10-a", "100-x", "50-B.sh", "50-a.sh", "9", "90-notify", "Zeta", "alpha",
    ]  # fmt: skip
    assert plan.rejected == () and not plan.refused and plan.problem is None
    assert all(h.path == hooks_dir / h.name for h in plan.hooks)


def test_rejected_entries_are_listed_in_name_order_with_reasons(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "10-ok")
    make_hook(hooks_dir, "20-ok.bak")
    make_hook(hooks_dir, ".hidden")
    make_hook(hooks_dir, "has space")
    make_hook(hooks_dir, "caf\u00e9")
    make_hook(hooks_dir, "30-off", mode=0o644)
    (hooks_dir / "40-dir").mkdir()
    plan = plan_hooks(hooks_dir)
    assert [h.name for h in plan.hooks] == ["10-ok"]
    names = [r.name for r in plan.rejected]
    assert names == sorted(names, key=lambda n: n.encode())
    rejected = by_name(plan)
    assert rejected["20-ok.bak"].severity == IGNORED
    assert rejected[".hidden"].severity == IGNORED
    assert rejected["has space"].severity == IGNORED
    assert rejected["caf\u00e9"].severity == IGNORED
    assert rejected["40-dir"].severity == IGNORED and "directory" in rejected["40-dir"].reason
    off = rejected["30-off"]
    assert off.severity == SKIPPED and off.reason == "not executable"
    assert off.fix == f"chmod +x {hooks_dir / '30-off'}"
    assert not plan.refused  # nothing unsafe
    assert {r.name for r in plan.warnings} == {"30-off"}


def test_fifo_is_not_a_hook(hooks_dir: Path) -> None:
    os.mkfifo(hooks_dir / "10-fifo")
    plan = plan_hooks(hooks_dir)
    assert plan.hooks == ()
    assert by_name(plan)["10-fifo"].reason == "not a regular file"


# --- plan: symlinks ------------------------------------------------------------


def test_symlink_counts_as_its_target(hooks_dir: Path, tmp_path: Path) -> None:
    target = make_hook(tmp_path, "real-script")
    (hooks_dir / "20-link").symlink_to(target)
    plan = plan_hooks(hooks_dir)
    assert plan.hooks == (Hook("20-link", hooks_dir / "20-link"),)


def test_symlink_to_unsafe_target_is_refused(hooks_dir: Path, tmp_path: Path) -> None:
    target = make_hook(tmp_path, "real-script", mode=0o777)
    (hooks_dir / "20-link").symlink_to(target)
    plan = plan_hooks(hooks_dir)
    assert plan.hooks == ()
    assert by_name(plan)["20-link"].severity == REFUSED
    assert plan.refused


def test_symlink_to_non_executable_is_skipped(hooks_dir: Path, tmp_path: Path) -> None:
    target = make_hook(tmp_path, "real-script", mode=0o644)
    (hooks_dir / "20-link").symlink_to(target)
    assert by_name(plan_hooks(hooks_dir))["20-link"].severity == SKIPPED


def test_dangling_symlink_is_rejected_with_its_reason(hooks_dir: Path) -> None:
    (hooks_dir / "20-gone").symlink_to("/nonexistent/spotwatch-hook")
    plan = plan_hooks(hooks_dir)
    gone = by_name(plan)["20-gone"]
    assert gone.severity == SKIPPED
    assert "dangling symlink to /nonexistent/spotwatch-hook" in gone.reason
    assert "rm " in gone.fix
    assert plan.hooks == ()


def test_symlink_to_directory_is_not_a_hook(hooks_dir: Path, tmp_path: Path) -> None:
    (hooks_dir / "20-dir").symlink_to(tmp_path)
    assert by_name(plan_hooks(hooks_dir))["20-dir"].severity == IGNORED


# --- plan: safety ---------------------------------------------------------------


def test_group_writable_hook_is_refused_others_still_run(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "10-ok")
    make_hook(hooks_dir, "20-gw", mode=0o775)
    make_hook(hooks_dir, "30-ww", mode=0o757)
    plan = plan_hooks(hooks_dir)
    assert [h.name for h in plan.hooks] == ["10-ok"]
    gw, ww = by_name(plan)["20-gw"], by_name(plan)["30-ww"]
    assert (gw.severity, gw.reason) == (REFUSED, "group-writable")
    assert gw.fix == f"chmod go-w {hooks_dir / '20-gw'}"
    assert (ww.severity, ww.reason) == (REFUSED, "world-writable")
    assert plan.refused


def test_unsafe_and_not_executable_names_both_fixes(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "20-gw", mode=0o664)
    gw = by_name(plan_hooks(hooks_dir))["20-gw"]
    assert gw.severity == REFUSED
    assert "group-writable" in gw.reason and "not executable" in gw.reason
    assert "chmod go-w" in gw.fix and "chmod +x" in gw.fix


def test_world_writable_directory_runs_nothing(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "10-ok")
    make_hook(hooks_dir, "20-off", mode=0o644)
    hooks_dir.chmod(0o777)
    plan = plan_hooks(hooks_dir)
    assert plan.hooks == ()
    assert plan.refused and not plan.missing
    assert plan.problem is not None and "world-writable" in plan.problem
    assert plan.fix == f"chmod go-w {hooks_dir}"
    rejected = by_name(plan)
    # Each file is still reported, with the directory as the reason for the good ones.
    assert rejected["10-ok"].severity == REFUSED and "directory" in rejected["10-ok"].reason
    assert rejected["20-off"].reason == "not executable"


def test_group_writable_sticky_directory_is_still_unsafe(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "10-ok")
    hooks_dir.chmod(0o1775)
    plan = plan_hooks(hooks_dir)
    assert plan.hooks == () and plan.problem is not None and "group-writable" in plan.problem


def test_wrong_owner_by_injected_uids(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "10-ok")
    mine = os.stat(hooks_dir / "10-ok").st_uid
    plan = plan_hooks(hooks_dir, allowed_uids=frozenset({mine + 1}))
    assert plan.hooks == ()
    assert plan.problem is not None and f"owned by uid {mine}" in plan.problem


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_hook_owned_by_another_user_is_refused(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "10-ok")
    theirs = make_hook(hooks_dir, "20-theirs")
    os.chown(theirs, OTHER_UID, -1)
    plan = plan_hooks(hooks_dir)
    assert [h.name for h in plan.hooks] == ["10-ok"]
    item = by_name(plan)["20-theirs"]
    assert item.severity == REFUSED
    assert item.reason == f"owned by uid {OTHER_UID}"
    assert item.fix == f"chown root: {theirs}"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_directory_owned_by_another_user_is_refused(hooks_dir: Path) -> None:
    make_hook(hooks_dir, "10-ok")
    os.chown(hooks_dir, OTHER_UID, -1)
    plan = plan_hooks(hooks_dir)
    assert plan.hooks == () and plan.refused
    assert plan.problem is not None and f"owned by uid {OTHER_UID}" in plan.problem
    assert plan.fix == f"chown root: {hooks_dir}"


def test_missing_directory(tmp_path: Path) -> None:
    plan = plan_hooks(tmp_path / "nope")
    assert plan.missing and plan.refused and plan.hooks == ()
    assert plan.problem == f"hooks directory {tmp_path / 'nope'} does not exist"
    assert "install -d" in plan.fix


def test_a_file_is_not_a_hooks_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    plan = plan_hooks(tmp_path / "file")
    assert plan.missing and plan.problem is not None and "not a directory" in plan.problem


def test_empty_directory_runs_nothing_and_is_fine(hooks_dir: Path) -> None:
    plan = plan_hooks(hooks_dir)
    assert plan.hooks == () and plan.rejected == () and not plan.refused


def test_check_hook_sees_a_hook_that_became_unsafe(hooks_dir: Path) -> None:
    path = make_hook(hooks_dir, "10-ok")
    assert check_hook(path) is None
    path.chmod(0o777)
    verdict = check_hook(path)
    assert verdict is not None and verdict.severity == REFUSED
    path.unlink()
    assert check_hook(path) is not None


def test_check_hook_gives_the_plans_verdict_for_every_kind_of_entry(hooks_dir: Path) -> None:
    """The re-check's one-stat answer for a runnable hook, and the long way for the rest."""
    make_hook(hooks_dir, "10-ok")
    make_hook(hooks_dir, "20-no-exec", mode=0o644)
    make_hook(hooks_dir, "30-group-writable", mode=0o775)
    (hooks_dir / "40-dir").mkdir()
    (hooks_dir / "50-link").symlink_to(hooks_dir / "10-ok")
    (hooks_dir / "60-dangling").symlink_to(hooks_dir / "missing")
    other_owner = frozenset({12345})  # as if root and we were someone else
    plan = plan_hooks(hooks_dir)
    verdicts = {r.name: (r.severity, r.reason) for r in plan.rejected}
    for name in sorted(os.listdir(hooks_dir)):
        verdict = check_hook(hooks_dir / name)
        got = None if verdict is None else (verdict.severity, verdict.reason)
        assert got == verdicts.get(name), name
        foreign = check_hook(hooks_dir / name, other_owner)
        if name in ("10-ok", "50-link"):
            assert foreign is not None and foreign.severity == REFUSED
            assert "owned by uid" in foreign.reason


def test_mode_bits_are_read_from_the_file(hooks_dir: Path) -> None:
    path = make_hook(hooks_dir, "10-ok", mode=0o700)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert [h.name for h in plan_hooks(hooks_dir).hooks] == ["10-ok"]


# --- environment ------------------------------------------------------------------


NOTICE = Notice(
    kind="spot-interruption",
    action="stop",
    raw_time="2026-11-26T03:00:25Z",
    time=1795662025.0,
    deadline=1795662025.75,
    id="0123456789abcdef",
    source="instance-action",
)

IDENTITY = Identity("i-0abc", "m5.large", "eu-west-1", "eu-west-1b", "123456789012")


def test_hook_environment_has_every_variable() -> None:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SPOTWATCH_HOOKS_DIR": "/x"}
    env = notice_environment(base, NOTICE, IDENTITY)
    assert env == {
        **base,
        "SPOTWATCH_EVENT": "spot-interruption",
        "SPOTWATCH_ACTION": "stop",
        "SPOTWATCH_NOTICE_TIME": "2026-11-26T03:00:25Z",
        "SPOTWATCH_DEADLINE": "1795662025",
        "SPOTWATCH_NOTICE_ID": "0123456789abcdef",
        "SPOTWATCH_INSTANCE_ID": "i-0abc",
        "SPOTWATCH_INSTANCE_TYPE": "m5.large",
        "SPOTWATCH_REGION": "eu-west-1",
        "SPOTWATCH_AZ": "eu-west-1b",
        "SPOTWATCH_PHASE": "end",  # resume.d's hooks see "resume"
    }
    assert base == {"PATH": "/usr/bin:/bin", "HOME": "/root", "SPOTWATCH_HOOKS_DIR": "/x"}


def test_hook_environment_drill_flag_and_stale_values() -> None:
    base = {"SPOTWATCH_DRILL": "1", "SPOTWATCH_SECONDS_LEFT": "99", "SPOTWATCH_EVENT": "old"}
    env = notice_environment(base, NOTICE, IDENTITY)
    assert "SPOTWATCH_DRILL" not in env and "SPOTWATCH_SECONDS_LEFT" not in env
    assert env["SPOTWATCH_EVENT"] == "spot-interruption"
    assert notice_environment({}, NOTICE, IDENTITY, drill=True)["SPOTWATCH_DRILL"] == "1"


def test_hook_environment_keeps_an_empty_notice_time() -> None:
    malformed = Notice("spot-interruption", "terminate", "", None, 100.0, "id", "x", "no time")
    env = notice_environment({}, malformed, Identity())
    assert env["SPOTWATCH_NOTICE_TIME"] == "" and env["SPOTWATCH_DEADLINE"] == "100"
    assert env["SPOTWATCH_INSTANCE_ID"] == "unknown"


def test_hook_environment_drops_systemd_notify_and_watchdog_variables() -> None:
    from spotwatch.hooks import notice_environment
    from spotwatch.notice import Identity, Notice

    notice = Notice("spot-interruption", "terminate", "", None, 1.0, "abc", "test")
    base = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    env = notice_environment(base, notice, Identity())
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env and "WATCHDOG_PID" not in env
    assert env["PATH"] == "/bin"
