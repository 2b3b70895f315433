"""``spotwatch run`` against a careless operator and a broken disk: real subprocesses
against the IMDS simulator, real hooks, real signals.

Two daemons on one state directory, SIGKILL and an immediate restart under a long
hook, SIGHUP and SIGTERM mid-hook, every flag with bad values, a notice whose time
moves on every poll, and a hooks directory missing at the notice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spotwatch import config, orphans
from spotwatch.imdssim import ImdsSimulator, format_time
from tests.helpers import (
    REPO,
    Daemon,
    Daemons,
    ends,
    make_hooks_dir,
    read_record,
    recording_hook,
    starts,
    wait_until,
)
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture
from tests.helpers import sim_fixture as sim_fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "record.txt"


def overlaps(record: Path, hook: str) -> int:
    """How often ``hook`` started while another copy of it was still running, from the
    hook's own start and end lines."""
    running = worst = 0
    for name, what, _ in read_record(record):
        if name != hook:
            continue
        if what == "start":
            running += 1
            worst = max(worst, running)
        elif what == "end":
            running -= 1
    return worst - 1 if worst else 0


# -- one daemon per state directory ------------------------------------------------------


def test_a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    first = daemons.start(sim.url, hooks_dir)
    first.wait_for_event("watcher.started")
    second = daemons.start(sim.url, hooks_dir)
    assert second.wait(timeout=30) == 2
    lines = second.log_path.read_text().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert f"PID {first.proc.pid}" in lines[0] and "--state-dir" in lines[0]
    # Another state directory (a drill, a test) runs side by side.
    other = Daemon(sim.url, hooks_dir, tmp_path / "other-state", tmp_path / "other.log")
    try:
        wait_until(lambda: "watcher.started" in other.log_path.read_text(), 30, "other daemon")
    finally:
        other.stop()
    # The first one still owns the notice: its hooks run once.
    sim.schedule_notice("terminate")
    first.wait_for_event("notice.handled", timeout=30)
    assert starts(record) == ["10-hook"]
    # Once the first has gone (even by SIGKILL) the lock is free again.
    first.signal(signal.SIGKILL)
    first.wait()
    third = daemons.start(sim.url, hooks_dir)
    # The notice is still out and already handled: said once, nothing runs again.
    still = third.wait_for_event("notice.still_out", timeout=20)[0]
    assert still["hooks_done"] == 1
    assert starts(record) == ["10-hook"]


# -- no second copy of a running hook ------------------------------------------------------


def test_sigkill_mid_hook_and_an_immediate_restart_never_run_two_copies(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-long", record, extra="sleep 4")
    recording_hook(hooks_dir, "20-after", record)
    sim.schedule_notice("terminate")
    first = daemons.start(sim.url, hooks_dir)
    first.wait_for_event("hook.started")
    wait_until(lambda: starts(record) == ["10-long"], 20, "10-long to start")
    # The daemon dies; the hook's own process group lives on (no systemd here).
    first.signal(signal.SIGKILL)
    first.wait()
    second = daemons.start(sim.url, hooks_dir)
    second.wait_for_event("notice.handled", timeout=60)

    assert overlaps(record, "10-long") == 0, read_record(record)
    assert second.events("hook.orphan_running"), "the restart did not see the orphan"
    assert second.events("hook.orphan_ended")
    # It ended on its own: it runs again (its exit status died with the first daemon).
    assert starts(record) == ["10-long", "10-long", "20-after"]
    assert ends(record) == ["10-long", "10-long", "20-after"]


def test_an_orphan_past_its_time_is_stopped_and_recorded_as_timed_out(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-stuck", record, extra="sleep 300")
    recording_hook(hooks_dir, "20-after", record)
    sim.schedule_notice("terminate")
    first = daemons.start(sim.url, hooks_dir, "--hook-timeout", "3")
    wait_until(lambda: starts(record) == ["10-stuck"], 20, "10-stuck to start")
    pgid = int(first.wait_for_event("hook.started")[0]["pid"])
    first.signal(signal.SIGKILL)
    first.wait()
    second = daemons.start(sim.url, hooks_dir, "--hook-timeout", "3")
    second.wait_for_event("notice.handled", timeout=60)
    assert second.events("hook.orphan_killed")
    assert starts(record) == ["10-stuck", "20-after"]
    # Nothing of its group lives on (a zombie waiting for init to reap it is dead).
    assert orphans.members(pgid) == []


# -- signals -------------------------------------------------------------------------------


def test_sighup_mid_hook_is_logged_and_the_daemon_keeps_going(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-long", record, extra="sleep 3")
    recording_hook(hooks_dir, "20-after", record)
    daemon = daemons.start(sim.url, hooks_dir)
    daemon.wait_for_event("watcher.started")
    sim.schedule_notice("terminate")
    daemon.wait_for_event("hook.started")
    daemon.signal(signal.SIGHUP)
    hangup = daemon.wait_for_event("signal.hangup", timeout=10)[0]
    assert hangup["hook_running"] == "10-long" and "restart" in hangup["note"]
    daemon.wait_for_event("notice.handled", timeout=30)
    assert starts(record) == ["10-long", "20-after"]
    assert daemon.proc.poll() is None
    # Idle too: logged, still running.
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_event("signal.hangup", count=2, timeout=10)
    assert daemon.proc.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0


def test_sigterm_mid_hook_is_logged_when_it_arrives(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-long", record, extra="sleep 5")
    recording_hook(hooks_dir, "20-after", record)
    daemon = daemons.start(sim.url, hooks_dir)
    daemon.wait_for_event("watcher.started")
    sim.schedule_notice("terminate")
    daemon.wait_for_event("hook.started")
    daemon.signal(signal.SIGTERM)
    stopping = daemon.wait_for_event("spotwatch.stopping", timeout=10)[0]
    # Logged while the hook still runs, not after it.
    assert ends(record) == []
    assert stopping["signal"] == "SIGTERM" and stopping["hook_running"] == "10-long"
    assert "after the running hook" in stopping["note"]
    assert daemon.wait(timeout=30) == 0
    assert starts(record) == ["10-long"]


# -- flags and settings ----------------------------------------------------------------------

# One or two bad values per flag; config's own tests walk more in-process.
BAD_VALUES: dict[str, list[str]] = {
    "--imds-url": ["http://", "http://[::1", "http://127.0.0.1:99999", "http://a host"],
    "--interval": ["1e10", "0.000001", "soon"],
    "--hooks-dir": ["/nonexistent/hooks.d"],
    "--state-dir": ["/dev/null/state"],
    "--hook-timeout": ["0", "1e9"],
    "--deadline-margin": ["-1", "200"],
    "--on-rebalance": ["maybe"],
    "--log-format": ["xml"],
    "--log-level": ["loud"],
    "--hook-output-head": ["-1", "many"],
    "--hook-output-tail": ["1e3"],
    "--metrics-file": ["/nonexistent/dir/spotwatch.prom"],
    "--watch": ["spot,gce"],
    "--asg-lifecycle-hook": [" "],
    "--asg-name": [" "],
    "--asg-deadline": ["0", "99999"],
    "--maintenance-lead": ["inf"],
    "--cloud": ["openstack"],
    "--no-approve": ["perhaps"],
}
# Flags that take no value on the command line: only their environment twin can be bad.
SWITCHES = {"--on-rebalance", "--no-approve"}


def test_every_run_flag_has_bad_values_in_the_walk() -> None:
    assert set(BAD_VALUES) == set(config.RUN_FLAGS)


def _walk_cases() -> list[tuple[str, str, str]]:
    cases = []
    for flag, values in BAD_VALUES.items():
        for value in values:
            if flag not in SWITCHES:
                cases.append((flag, value, "command line"))
            cases.append((flag, value, "environment"))
    return cases


def test_every_flag_with_bad_values_is_one_line_and_exit_2(tmp_path: Path) -> None:
    hooks = make_hooks_dir(tmp_path)
    base = {
        "--imds-url": "http://127.0.0.1:9",
        "--hooks-dir": str(hooks),
        "--state-dir": str(tmp_path / "state"),
    }
    env_base = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    env_base["SPOTWATCH_CLOUD"] = "aws"
    failures = []
    for flag, value, where in _walk_cases():
        argv = [x for f, v in base.items() if f != flag for x in (f, v)]
        env = dict(env_base)
        if flag == "--cloud":
            env.pop("SPOTWATCH_CLOUD")
        if where == "command line":
            argv += [flag, value]
        else:
            env[config.env_name(flag)] = value
        if flag in ("--asg-lifecycle-hook", "--asg-name"):
            argv += ["--watch", "spot,asg"]
        proc = subprocess.run(
            [sys.executable, "-m", "spotwatch", "run", *argv],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        lines = proc.stderr.splitlines()
        name = flag if where == "command line" else config.env_name(flag)
        ok = (
            proc.returncode == 2
            and len(lines) == 1
            and "Traceback" not in proc.stderr
            and (name in lines[0] or flag in lines[0] or flag == "--state-dir"
                 or flag == "--hooks-dir")
        )  # fmt: skip
        if not ok:
            failures.append((flag, value, where, proc.returncode, proc.stderr[-500:]))
    assert failures == []


# -- one end, one run --------------------------------------------------------------------------


def test_a_notice_whose_time_moves_on_every_poll_runs_the_hooks_once(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    lead = 8.0  # the notice always says "in 8 s": well past the first deadline below
    daemon = daemons.start(sim.url, hooks_dir, "--deadline-margin", "1", interval=0.5)
    daemon.wait_for_event("watcher.started")
    began = time.time()
    while time.time() - began < 2 * lead + 4:
        now = time.time()
        sim.schedule_notice("terminate", appear_at=now - 1, notice_time=format_time(now + lead))
        time.sleep(0.3)
    assert len(daemon.events("notice.folded")) >= 5  # it did move, many times
    assert starts(record) == ["10-hook"]
    assert len(daemon.events("notice.handled")) == 1


# -- no notice closed without its hooks -------------------------------------------------------


def test_a_hooks_dir_missing_at_the_notice_is_waited_for(
    sim: ImdsSimulator, tmp_path: Path, record: Path, daemons: Daemons
) -> None:
    hooks = make_hooks_dir(tmp_path, "hooks.d")
    recording_hook(hooks, "10-hook", record)
    daemon = daemons.start(sim.url, hooks)
    daemon.wait_for_event("watcher.started")
    aside = tmp_path / "hooks.d.aside"
    hooks.rename(aside)
    sim.schedule_notice("terminate")
    missing = daemon.wait_for_event("hooks.dir_missing", timeout=20)[0]
    assert missing["seconds_left"] > 60
    time.sleep(2)  # the directory comes back 2 s later
    aside.rename(hooks)
    daemon.wait_for_event("hooks.dir_back", timeout=10)
    handled = daemon.wait_for_event("notice.handled", timeout=20)[0]
    assert handled["hooks"] == 1
    assert starts(record) == ["10-hook"]


def test_a_notice_that_ran_no_hooks_is_a_warning_and_names_what_it_skipped(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, daemons: Daemons
) -> None:
    # Only names the rules skip for good reason: a backup and a disabled hook.
    recording_hook(hooks_dir, "10-hook~", record)
    recording_hook(hooks_dir, "20-hook.disabled", record)
    daemon = daemons.start(sim.url, hooks_dir)
    daemon.wait_for_event("watcher.started")
    sim.schedule_notice("terminate")
    handled = daemon.wait_for_event("notice.handled", timeout=20)[0]
    assert handled["level"] == "warning" and handled["hooks"] == 0
    (ignored,) = daemon.events("hooks.ignored")
    assert ignored["level"] == "info"
    assert sorted(ignored["names"]) == ["10-hook~", "20-hook.disabled"]
    assert starts(record) == []
