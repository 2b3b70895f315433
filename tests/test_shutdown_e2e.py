"""``spotwatch run`` on a system shutdown, end to end: a real process, real signals, real
hooks, and a ``systemctl`` of the test's own on PATH saying what systemd would."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from spotwatch.imdssim import ImdsSimulator
from tests.helpers import Daemons, ends, hook_env, recording_hook, starts, write_hook
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture
from tests.helpers import sim_fixture as sim_fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

FAKE_SYSTEMCTL = """#!/bin/sh
case "$1" in
    list-jobs) cat "{jobs}" ;;
    is-system-running) cat "{state}"; exit 1 ;;
    show) echo "30s" ;;
    *) exit 1 ;;
esac
"""


@pytest.fixture
def systemd(tmp_path: Path) -> dict[str, str]:
    """The environment of a daemon started by systemd, with a fake systemctl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    jobs, state = tmp_path / "jobs", tmp_path / "state.txt"
    jobs.write_text("")
    state.write_text("running\n")
    write_hook(
        bin_dir, "systemctl", FAKE_SYSTEMCTL.format(jobs=jobs, state=state).split("\n", 1)[1]
    )
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    import os

    return {
        "INVOCATION_ID": "0123456789abcdef",
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SPOTWATCH_BOOT_ID_FILE": str(boot_id),
        "_JOBS": str(jobs),
        "_STATE": str(state),
    }


def _shutting_down(env: dict[str, str], target: str) -> None:
    Path(env["_JOBS"]).write_text(
        f"   1 {target} start waiting\n  23 spotwatch.service stop running\n"
    )
    Path(env["_STATE"]).write_text("stopping\n")


def test_idle_poweroff_runs_every_hook_as_shutdown_and_the_next_boot_comes_back(
    sim: ImdsSimulator, hooks_dir: Path, tmp_path: Path, daemons: Daemons,
    systemd: dict[str, str],
) -> None:  # fmt: skip
    record = tmp_path / "record.txt"
    resume_dir = tmp_path / "resume.d"
    resume_dir.mkdir(mode=0o755)
    for name in ("10-first", "20-second"):
        recording_hook(hooks_dir, name, record)
    recording_hook(resume_dir, "50-back", record)
    daemon = daemons.start(sim.url, hooks_dir, "--resume-dir", str(resume_dir), env=systemd)
    daemon.wait_for_event("watcher.started")
    _shutting_down(systemd, "poweroff.target")
    stopped_at = time.time()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert starts(record) == ends(record) == ["10-first", "20-second"]
    env = hook_env(record, "10-first")
    assert env["SPOTWATCH_EVENT"] == "shutdown" and env["SPOTWATCH_SHUTDOWN"] == "poweroff"
    assert env["SPOTWATCH_PHASE"] == "end"
    # The unit's TimeoutStopSec less the 2 s reserve: here no unit is in the cgroup
    # path, so systemd's default (90 s); the systemd tier checks the unit's own.
    assert stopped_at + 80 < int(env["SPOTWATCH_DEADLINE"]) < stopped_at + 90
    assert daemon.events("shutdown.detected")[0]["shutdown"] == "poweroff"

    # The same instance boots again: how the last boot ended, then the way back.
    Path(systemd["SPOTWATCH_BOOT_ID_FILE"]).write_text("boot-2\n")
    Path(systemd["_JOBS"]).write_text("")
    Path(systemd["_STATE"]).write_text("running\n")
    again = daemons.start(sim.url, hooks_dir, "--resume-dir", str(resume_dir), env=systemd)
    again.wait_for_event("resume.handled", timeout=20)
    previous = again.events("boot.previous_end")
    assert len(previous) == 1 and previous[0]["end"] == "shut-down"
    back = hook_env(record, "50-back")
    assert back["SPOTWATCH_PHASE"] == "resume" and back["SPOTWATCH_EVENT"] == "shutdown"
    assert back["SPOTWATCH_NOTICE_ID"] == env["SPOTWATCH_NOTICE_ID"]
    again.signal(signal.SIGTERM)  # the system is running: an operator's stop
    assert again.wait(30) == 0
    assert starts(record) == ["10-first", "20-second", "50-back"]


def test_an_operators_stop_under_systemd_runs_no_hook(
    sim: ImdsSimulator, hooks_dir: Path, tmp_path: Path, daemons: Daemons,
    systemd: dict[str, str],
) -> None:  # fmt: skip
    record = tmp_path / "record.txt"
    recording_hook(hooks_dir, "10-first", record)
    daemon = daemons.start(sim.url, hooks_dir, env=systemd)
    daemon.wait_for_event("watcher.started")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert starts(record) == []
    assert daemon.events("stop.requested")


def test_a_reboot_during_the_hooks_of_a_notice_runs_them_all_and_a_second_sigterm_stops(
    sim: ImdsSimulator, hooks_dir: Path, tmp_path: Path, daemons: Daemons,
    systemd: dict[str, str],
) -> None:  # fmt: skip
    record = tmp_path / "record.txt"
    gate = tmp_path / "gate"
    recording_hook(
        hooks_dir, "10-slow", record, extra=f'while [ ! -e "{gate}" ]; do sleep 0.05; done'
    )
    recording_hook(hooks_dir, "20-next", record)
    recording_hook(hooks_dir, "30-last", record, extra="sleep 30")
    recording_hook(hooks_dir, "40-never", record)
    daemon = daemons.start(sim.url, hooks_dir, env=systemd)
    daemon.wait_for_event("watcher.started")
    sim.schedule_notice("stop")
    daemon.wait_for_event("hook.started")
    _shutting_down(systemd, "reboot.target")
    daemon.signal(signal.SIGTERM)
    gate.write_text("")
    daemon.wait_for_event("hook.started", count=3, timeout=20)
    assert daemon.events("shutdown.detected")[0]["shutdown"] == "reboot"
    daemon.signal(signal.SIGTERM)  # the second: stop everything
    assert daemon.wait(60) == 0
    assert starts(record) == ["10-slow", "20-next", "30-last"]
    assert hook_env(record, "20-next")["SPOTWATCH_EVENT"] == "spot-interruption"
    assert "40-never" not in starts(record)
