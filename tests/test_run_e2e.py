"""``spotwatch run`` end to end: a real subprocess against the IMDS simulator over HTTP,
real hook processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spotwatch.imdssim import INSTANCE_ACTION_PATH, ImdsSimulator
from tests.helpers import (
    REPO,
    Daemons,
    ends,
    free_port,
    hook_env,
    read_record,
    recording_hook,
    starts,
    wait_until,
)
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture
from tests.helpers import sim_fixture as sim_fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]



@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "record.txt"


def test_notice_is_seen_within_one_interval_and_hooks_run_in_order_with_their_environment(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    for name in ("10-checkpoint", "50-ship-logs.sh", "90-notify", "Z-upper", "a.b_c-d"):
        recording_hook(hooks_dir, name, record)
    # None of these may run: names the rule ignores, no execute bit, group-writable.
    for name in (".hidden", "-dash", "notes~", "old.bak", "x.disabled", "y.dpkg-old",
                 "z.rpmnew", "has space", "x.swp"):  # fmt: skip
        recording_hook(hooks_dir, name, record)
    recording_hook(hooks_dir, "30-no-exec-bit", record, mode=0o644)
    unsafe = recording_hook(hooks_dir, "40-group-writable", record)
    unsafe.chmod(0o775)
    (hooks_dir / "60-a-directory").mkdir()

    daemon = daemons.start(sim.url, hooks_dir, interval=1.0)
    daemon.wait_for_event("watcher.started")
    appear = time.time() + 1.5
    sim.schedule_notice("hibernate", appear_at=appear, notice_time="2031-05-06T07:08:09Z")
    daemon.wait_for_event("notice.handled", timeout=20)

    assert starts(record) == ["10-checkpoint", "50-ship-logs.sh", "90-notify", "Z-upper", "a.b_c-d"]
    assert ends(record) == starts(record)
    first_start = float(read_record(record)[0][2])
    # Seen within one interval (1 s) plus slack for a loaded 2-core machine.
    assert first_start - appear < 1.0 + 1.5

    env = hook_env(record, "50-ship-logs.sh")
    assert env["SPOTWATCH_EVENT"] == "spot-interruption"
    assert env["SPOTWATCH_ACTION"] == "hibernate"
    assert env["SPOTWATCH_NOTICE_TIME"] == "2031-05-06T07:08:09Z"
    assert env["SPOTWATCH_DEADLINE"] == "1935817689"
    assert int(env["SPOTWATCH_SECONDS_LEFT"]) > 100_000_000
    # The notice is years away: the hook timeout (default 60 s) bounds this hook.
    assert abs(int(env["SPOTWATCH_HOOK_DEADLINE"]) - (first_start + 60)) < 5
    assert env["SPOTWATCH_INSTANCE_ID"] == "i-0123456789abcdef0"
    assert env["SPOTWATCH_INSTANCE_TYPE"] == "m5.large"
    assert env["SPOTWATCH_REGION"] == "us-east-1"
    assert env["SPOTWATCH_AZ"] == "us-east-1a"
    assert len(env["SPOTWATCH_NOTICE_ID"]) >= 8
    assert "SPOTWATCH_DRILL" not in env
    # Given as --state-dir, not in the environment: the actions a hook calls need it.
    assert env["SPOTWATCH_STATE_DIR"] == str(tmp_path / "state")

    skipped = {e["hook"] for e in daemon.events("hook.skipped")}
    refused = {e["hook"] for e in daemon.events("hook.refused")}
    assert "30-no-exec-bit" in skipped
    assert "40-group-writable" in refused
    # The daemon keeps watching after the notice, and does not run it again.
    polls = sim.count(INSTANCE_ACTION_PATH)
    sim.wait_for_requests(INSTANCE_ACTION_PATH, polls + 2, timeout=10)
    assert daemon.proc.poll() is None
    assert len(daemon.events("notice.detected")) == 1


def test_a_failing_and_a_hanging_hook_do_not_block_the_ones_after(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-fails", record, extra="exit 3")
    # Ignores SIGTERM and leaves a grandchild holding the pipes: only SIGKILL to the group works.
    recording_hook(hooks_dir, "20-hangs", record, extra="trap '' TERM\nsleep 300 &\nsleep 300")
    recording_hook(hooks_dir, "30-after", record)
    daemon = daemons.start(sim.url, hooks_dir, "--hook-timeout", "2")
    daemon.wait_for_event("watcher.started")
    sim.schedule_notice("terminate")
    handled = daemon.wait_for_event("notice.handled", timeout=40)[0]
    assert starts(record) == ["10-fails", "20-hangs", "30-after"]
    assert ends(record) == ["30-after"]
    finished = {e["hook"]: e for e in daemon.events("hook.finished")}
    assert finished["10-fails"]["exit_code"] == 3
    assert "SIGKILL" in str(finished["20-hangs"]) or "timed" in str(finished["20-hangs"])
    assert set(handled["failed"]) == {"10-fails", "20-hangs"}


def test_sigkill_mid_hooks_then_restart_runs_only_the_hooks_that_did_not_finish(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    marker = tmp_path / "second-hook-ran-once"
    recording_hook(hooks_dir, "10-first", record)
    # Blocks the first time (until the daemon is killed), quick the second time.
    recording_hook(
        hooks_dir, "20-second", record,
        extra=f'if [ ! -e "{marker}" ]; then touch "{marker}"; sleep 60; fi',
    )  # fmt: skip
    recording_hook(hooks_dir, "30-third", record)
    sim.schedule_notice("terminate")

    first = daemons.start(sim.url, hooks_dir)
    # The marker, not the record's "start" line: it is written just before the sleep.
    wait_until(marker.exists, 20, "20-second to start sleeping")
    started = first.wait_for_event("hook.started", count=2)
    hook_pid = next(int(e["pid"]) for e in started if e["hook"] == "20-second")
    first.signal(signal.SIGKILL)
    first.wait()
    # systemd's KillMode=mixed would kill the hook's group too; do the same here.
    os.killpg(hook_pid, signal.SIGKILL)

    second = daemons.start(sim.url, hooks_dir)
    second.wait_for_event("notice.handled", timeout=30)
    assert starts(record) == ["10-first", "20-second", "20-second", "30-third"]
    assert ends(record) == ["10-first", "20-second", "30-third"]

    # A third start sees the notice still out, and the journal says it is done
    # (the second one stopped first: one daemon per state directory).
    second.signal(signal.SIGTERM)
    second.wait()
    third = daemons.start(sim.url, hooks_dir)
    third.wait_for_event("watcher.started")
    polls = sim.count(INSTANCE_ACTION_PATH)
    sim.wait_for_requests(INSTANCE_ACTION_PATH, polls + 3, timeout=10)
    assert third.events("notice.detected") == []
    assert starts(record).count("10-first") == 1


def test_sigterm_while_idle_exits_0_within_a_second(
    sim: ImdsSimulator, hooks_dir: Path, tmp_path: Path, daemons: Daemons
) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        daemon = daemons.start(sim.url, hooks_dir, interval=30.0)
        daemon.wait_for_event("watcher.started")
        sim.wait_for_requests(INSTANCE_ACTION_PATH, 1, timeout=10)
        began = time.monotonic()
        daemon.signal(signum)
        assert daemon.wait(timeout=10) == 0
        assert time.monotonic() - began < 1.0 + 0.5  # slack for a loaded machine
        assert daemon.events("watcher.stopped")


def test_sigterm_during_a_hook_lets_it_finish_then_exits_with_the_journal_consistent(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    release = tmp_path / "release"
    recording_hook(
        hooks_dir, "10-slow", record,
        extra=f'i=0; while [ ! -e "{release}" ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done',
    )  # fmt: skip
    recording_hook(hooks_dir, "20-next", record)
    sim.schedule_notice("terminate")
    daemon = daemons.start(sim.url, hooks_dir)
    wait_until(lambda: "10-slow" in starts(record), 20, "10-slow to start")
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: daemon.signal_delivered(signal.SIGTERM), 10, "SIGTERM to be delivered")
    assert daemon.proc.poll() is None, "the running hook must be allowed to finish"
    release.touch()
    assert daemon.wait(timeout=20) == 0
    assert ends(record) == ["10-slow"]
    # The daemon saw the hook through: a daemon that left early, or killed the
    # hook, cannot log it as finished with exit 0.
    (finished,) = daemon.events("hook.finished")
    assert (finished["hook"], finished["exit_code"]) == ("10-slow", 0), finished
    daemon.wait_for_event("notice.interrupted")

    # The restart runs only the hook that never started.
    again = daemons.start(sim.url, hooks_dir)
    again.wait_for_event("notice.handled", timeout=20)
    assert starts(record) == ["10-slow", "20-next"]


@pytest.mark.parametrize(
    ("fault", "count"),
    [
        ("500", 3),
        ("503", 3),
        ("429", 3),
        ("drop", 3),
        ("reset", 3),
        ("hang", 2),
        ("redirect", 2),
        ("oversize", 2),
        ("token-404", 1),
        ("token-405", 1),
    ],
)
def test_each_fault_is_survived_logged_once_and_a_following_notice_is_caught(
    fault: str,
    count: int,
    hooks_dir: Path,
    record: Path,
    tmp_path: Path,
    daemons: Daemons,
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    # A missing token endpoint means IMDSv1: the simulator must then accept plain GETs.
    with ImdsSimulator(require_token=not fault.startswith("token"), hang_seconds=3.0) as sim:
        sim.inject(fault, count=None)
        daemon = daemons.start(sim.url, hooks_dir)
        daemon.wait_for_event("watcher.started")
        wait_until(lambda: sum(1 for r in sim.requests() if r.fault) >= count, 30, "faults")
        if not fault.startswith("token"):
            daemon.wait_for_event("imds.fault")
        sim.clear_faults()
        sim.schedule_notice("terminate")
        daemon.wait_for_event("notice.handled", timeout=30)
        assert starts(record) == ["10-hook"]
        assert daemon.proc.poll() is None
        assert len(daemon.events("imds.fault")) <= 2  # logged once per source, not per poll
        if not fault.startswith("token"):
            assert daemon.events("imds.recovered")


def test_revoked_tokens_are_renewed_and_the_notice_is_caught(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    daemon = daemons.start(sim.url, hooks_dir)
    daemon.wait_for_event("watcher.started")
    sim.wait_for_requests(INSTANCE_ACTION_PATH, 2)
    tokens_before = sim.count("/latest/api/token", "PUT")
    sim.revoke_tokens()
    sim.schedule_notice("terminate")
    daemon.wait_for_event("notice.handled", timeout=20)
    assert sim.count("/latest/api/token", "PUT") > tokens_before
    assert starts(record) == ["10-hook"]


@pytest.mark.parametrize("body_fault", ["invalid-json", "no-time"])
def test_a_malformed_notice_is_still_a_notice(
    body_fault: str,
    sim: ImdsSimulator,
    hooks_dir: Path,
    record: Path,
    tmp_path: Path,
    daemons: Daemons,
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    daemon = daemons.start(sim.url, hooks_dir)
    daemon.wait_for_event("watcher.started")
    sim.inject(body_fault, count=None, path=INSTANCE_ACTION_PATH)
    daemon.wait_for_event("notice.handled", timeout=20)
    env = hook_env(record, "10-hook")
    # No usable action in invalid JSON: assume the worst. "no-time" says {"action": "stop"}.
    assert env["SPOTWATCH_ACTION"] == ("terminate" if body_fault == "invalid-json" else "stop")
    # Two minutes from when it was seen, not zero.
    assert 90 <= int(env["SPOTWATCH_SECONDS_LEFT"]) <= 120
    assert daemon.events("notice.detected")[0].get("problem")


def test_a_notice_time_in_the_past_still_gives_hooks_time(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    sim.schedule_notice("terminate", notice_time="2020-01-01T00:00:00Z")
    daemon = daemons.start(sim.url, hooks_dir)
    daemon.wait_for_event("notice.handled", timeout=20)
    env = hook_env(record, "10-hook")
    assert env["SPOTWATCH_NOTICE_TIME"] == "2020-01-01T00:00:00Z"
    assert 90 <= int(env["SPOTWATCH_SECONDS_LEFT"]) <= 120


def test_imds_unreachable_at_start_then_up(
    hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    port = free_port()
    daemon = daemons.start(f"http://127.0.0.1:{port}", hooks_dir)
    fault = daemon.wait_for_event("imds.fault", timeout=20)[0]
    assert fault["kind"] == "unreachable" and fault["advice"]
    with ImdsSimulator(port=port, require_token=True) as sim:
        sim.schedule_notice("terminate")
        daemon.wait_for_event("notice.handled", timeout=20)
    assert len(daemon.events("imds.fault")) == 1
    assert starts(record) == ["10-hook"]


def test_proxy_variables_are_ignored(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {k: dead_proxy for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY")}
    env["NO_PROXY"] = ""
    daemon = daemons.start(sim.url, hooks_dir, env=env)
    sim.schedule_notice("terminate")
    daemon.wait_for_event("notice.handled", timeout=20)
    assert daemon.events("imds.fault") == []
    assert all("x-forwarded-for" not in r.headers for r in sim.requests())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--interval", "0"], "--interval: must be from 0.1 to 3600 seconds"),
        (
            ["--hooks-dir", "/nonexistent/hooks.d"],
            "hooks directory /nonexistent/hooks.d does not exist",
        ),
        (["--log-format", "xml"], "--log-format"),
        (["--watch", "spot,gce"], "--watch: unknown source 'gce'"),
        (
            ["--watch", "maintenance", "--maintenance-lead", "5", "--deadline-margin", "10"],
            "--maintenance-lead (5 s) must exceed --deadline-margin (10 s)",
        ),
    ],
)
def test_bad_command_line_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    base = ["--state-dir", str(tmp_path / "s"), "--imds-url", "http://127.0.0.1:9"]
    if "--hooks-dir" not in argv:
        base += ["--hooks-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "run", *base, *argv],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_environment_variables_configure_the_daemon(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path
) -> None:
    recording_hook(hooks_dir, "10-hook", record)
    sim.schedule_notice("terminate")
    env = dict(os.environ)
    env.update(
        SPOTWATCH_IMDS_URL=sim.url,
        SPOTWATCH_INTERVAL="1",
        SPOTWATCH_HOOKS_DIR=str(hooks_dir),
        SPOTWATCH_STATE_DIR=str(tmp_path / "state"),
        SPOTWATCH_LOG_FORMAT="json",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotwatch", "run"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: ends(record) == ["10-hook"], 20, "the hook to run")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert '"event": "notice.handled"' in err


def test_a_restart_finishes_the_notice_even_when_imds_is_down_by_then(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    marker = tmp_path / "first-ran-once"
    recording_hook(
        hooks_dir, "10-first", record,
        extra=f'if [ ! -e "{marker}" ]; then touch "{marker}"; sleep 30; fi',
    )  # fmt: skip
    recording_hook(hooks_dir, "20-second", record)
    sim.schedule_notice("terminate")
    first = daemons.start(sim.url, hooks_dir)
    started = first.wait_for_event("hook.started")[0]
    wait_until(marker.exists, 20, "10-first to start sleeping")
    first.signal(signal.SIGKILL)
    first.wait()
    os.killpg(int(started["pid"]), signal.SIGKILL)

    dead_imds = f"http://127.0.0.1:{free_port()}"
    second = daemons.start(dead_imds, hooks_dir)
    second.wait_for_event("notice.handled", timeout=60)
    assert second.events("journal.resuming")
    # 10-first was interrupted mid-run, so it ran again; then the rest.
    assert starts(record) == ["10-first", "10-first", "20-second"]
    assert ends(record) == ["10-first", "20-second"]


AWS_SDK = ("boto3", "botocore", "s3transfer")


@pytest.mark.parametrize(
    "watch",
    [
        pytest.param((), id="default-sources"),
        pytest.param(
            ("--watch", "spot,rebalance,maintenance,asg", "--asg-lifecycle-hook", "drain"),
            id="every-aws-source",
        ),
    ],
)
def test_an_idle_spotwatch_run_never_imports_boto3(
    sim: ImdsSimulator, hooks_dir: Path, daemons: Daemons, watch: tuple[str, ...]
) -> None:
    """Idle (polling, no notice) the daemon stays lean: the AWS SDK is imported only
    when a notice needs an AWS API (the lifecycle action, the rebalance tag)."""
    recording_hook(hooks_dir, "10-hook", hooks_dir.parent / "record")
    daemon = daemons.start(sim.url, hooks_dir, *watch, interval=0.2, profile_imports=True)
    daemon.wait_for_event("watcher.started")
    polls = sim.count(INSTANCE_ACTION_PATH)
    sim.wait_for_requests(INSTANCE_ACTION_PATH, polls + 5, timeout=20)

    imported = daemon.imported()
    assert "spotwatch.watcher" in imported  # the import list is real and complete so far
    assert [m for m in imported if m.split(".")[0] in AWS_SDK] == []
    assert daemon.proc.poll() is None
