"""The hook runner with real subprocesses, real pipes and real signals."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from spotwatch.clocks import Clocks
from spotwatch.hooks import Hook
from spotwatch.runner import (
    ERROR,
    FAILED,
    KEPT_LINES,
    MAX_LINE_CHARS,
    NO_TIME_LEFT,
    OK,
    REFUSED,
    SKIPPED,
    TIMED_OUT,
    HookResult,
    HookSettings,
    RunObserver,
    describe_status,
    run_hooks,
)
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture

pytestmark = pytest.mark.slow

BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
# Generous: the machine is shared and has two cores.
SLACK = 8.0


@pytest.fixture(autouse=True, params=["popen", "posix_spawn"])
def spawn_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every runner test runs with both ways of starting a hook: subprocess.Popen
    (anywhere) and os.posix_spawn (the daemon, whose working directory is /)."""
    import spotwatch._hook_process as process_module

    mode = str(request.param)
    if mode == "posix_spawn":
        monkeypatch.chdir("/")  # as the daemon does; posix_spawn cannot chdir
        assert process_module._posix_spawn_fits()
    else:
        monkeypatch.setattr(process_module, "_posix_spawn_fits", lambda: False)
    return mode



@pytest.fixture
def stray_pids() -> Iterator[list[int]]:
    """pids a test's hooks left behind on purpose; killed at the end whatever happens."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sh(directory: Path, name: str, body: str, interpreter: str = "/bin/sh") -> Hook:
    path = directory / name
    path.write_text(f"#!{interpreter}\n{body}")
    path.chmod(0o755)
    return Hook(name, path)


def py(directory: Path, name: str, body: str) -> Hook:
    return sh(directory, name, body, interpreter=sys.executable)


def gone(pid: int) -> bool:
    """No such process, or only a zombie (our container's pid 1 may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return fields[0] in ("Z", "X")


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def read_pid(path: Path) -> int:
    assert wait_for(lambda: path.exists() and path.read_text().strip() != "")
    return int(path.read_text().strip())


SETTINGS = {f.name for f in dataclasses.fields(HookSettings)}
OBSERVER = {f.name for f in dataclasses.fields(RunObserver)}
CLOCKS = {"clock": "monotonic", "wall_clock": "wall", "log": "log"}


def run(hooks: list[Hook], **kwargs: Any) -> list[HookResult]:
    """run_hooks, with HookSettings', RunObserver's and the clocks' fields among the
    keywords (hook_timeout 30 s)."""
    settings = {"hook_timeout": 30.0, **{k: kwargs.pop(k) for k in SETTINGS & set(kwargs)}}
    observer = RunObserver(**{k: kwargs.pop(k) for k in OBSERVER & set(kwargs)})
    clocks = Clocks(**{CLOCKS[k]: kwargs.pop(k) for k in set(CLOCKS) & set(kwargs)})
    return run_hooks(hooks, kwargs.pop("env", BASE_ENV), HookSettings(**settings),
                     observer=observer, clocks=clocks, **kwargs)


# --- order, outcomes, environment ------------------------------------------------


def test_hooks_run_in_the_given_order_and_failures_do_not_stop_the_next(
    hooks_dir: Path, tmp_path: Path
) -> None:
    trail = tmp_path / "trail"
    hooks = [
        sh(hooks_dir, "10-a", f"echo a >> {trail}\nexit 0\n"),
        sh(hooks_dir, "20-b", f"echo b >> {trail}\nexit 3\n"),
        sh(hooks_dir, "30-c", f"echo c >> {trail}\nkill -USR1 $$\n"),
        sh(hooks_dir, "40-d", f"echo d >> {trail}\n"),
    ]
    results = run(hooks)
    assert trail.read_text().split() == ["a", "b", "c", "d"]
    assert [(r.name, r.outcome, r.description) for r in results] == [
        ("10-a", OK, "exit 0"),
        ("20-b", FAILED, "exit 3"),
        ("30-c", FAILED, "killed by SIGUSR1"),
        ("40-d", OK, "exit 0"),
    ]
    assert results[1].exit_code == 3 and results[1].signal is None
    assert results[2].exit_code is None and results[2].signal == signal.SIGUSR1
    assert results[0].ok and not results[1].ok
    assert all(r.started_at <= r.ended_at for r in results)
    assert all(a.ended_at <= b.started_at for a, b in zip(results, results[1:]))


def test_environment_argv_stdin_cwd_and_session(hooks_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    inherited_r, inherited_w = os.pipe()
    os.set_inheritable(inherited_w, True)
    try:
        hook = py(
            hooks_dir,
            "10-inspect",
            "import json, os, sys\n"
            f"json.dump({{'env': dict(os.environ), 'argv': sys.argv, 'cwd': os.getcwd(),"
            " 'stdin': sys.stdin.read(), 'pid': os.getpid(), 'pgid': os.getpgid(0),"
            " 'sid': os.getsid(0), 'fds': os.listdir('/proc/self/fd')},"
            f" open({str(out)!r}, 'w'))\n",
        )
        env = {**BASE_ENV, "SPOTWATCH_EVENT": "spot-interruption", "MINE": "1"}
        deadline = time.monotonic() + 100
        results = run([hook], env=env, deadline_mono=deadline, deadline_margin=10)
    finally:
        os.close(inherited_r)
        os.close(inherited_w)
    assert results[0].outcome == OK, results[0]
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(hook.path)]
    assert seen["cwd"] == "/"
    assert seen["stdin"] == ""
    assert seen["pgid"] == seen["pid"] == seen["sid"]  # its own session and group
    assert str(inherited_w) not in seen["fds"]  # close_fds
    assert seen["env"]["MINE"] == "1"
    assert seen["env"]["SPOTWATCH_EVENT"] == "spot-interruption"
    assert 98 <= int(seen["env"]["SPOTWATCH_SECONDS_LEFT"]) <= 100


def test_seconds_left_is_set_per_hook_and_absent_without_deadline(
    hooks_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "left"
    hooks = [
        sh(hooks_dir, "10-a", f'echo "${{SPOTWATCH_SECONDS_LEFT-unset}}" >> {log}; sleep 1.2\n'),
        sh(hooks_dir, "20-b", f'echo "${{SPOTWATCH_SECONDS_LEFT-unset}}" >> {log}\n'),
    ]
    run(hooks, deadline_mono=time.monotonic() + 60.9, deadline_margin=1)
    first, second = (int(x) for x in log.read_text().split())
    assert 57 <= first <= 60 and second < first
    log.unlink()
    env = {**BASE_ENV, "SPOTWATCH_SECONDS_LEFT": "stale"}
    run(hooks[1:], env=env, deadline_mono=None)
    assert log.read_text().split() == ["unset"]


# --- output ------------------------------------------------------------------------


def test_every_output_line_is_logged_with_hook_and_stream(hooks_dir: Path) -> None:
    hook = sh(
        hooks_dir,
        "10-talk",
        "echo one\necho two >&2\nprintf 'three\\r\\n'\necho\nprintf 'no newline at end'\n",
    )
    with capture_logs() as logs:
        results = run([hook])
    output = [(e["hook"], e["stream"], e["line"]) for e in logs if e["event"] == "hook.output"]
    assert sorted(output) == sorted(
        [
            ("10-talk", "stdout", "one"),
            ("10-talk", "stderr", "two"),
            ("10-talk", "stdout", "three"),
            ("10-talk", "stdout", ""),
            ("10-talk", "stdout", "no newline at end"),
        ]
    )
    stdout = [line.text for line in results[0].output if line.stream == "stdout"]
    assert stdout == ["one", "three", "", "no newline at end"]
    events = [e["event"] for e in logs]
    assert events[0] == "hook.started" and events[-1] == "hook.finished"
    finished = logs[-1]
    assert (finished["outcome"], finished["exit_code"], finished["hook"]) == (OK, 0, "10-talk")


def test_long_lines_are_split_and_bad_bytes_replaced(hooks_dir: Path) -> None:
    hook = py(
        hooks_dir,
        "10-long",
        "import sys\n"
        f"sys.stdout.write('x' * {MAX_LINE_CHARS * 2 + 10})\n"  # no newline at all
        "sys.stdout.flush()\n"
        "sys.stderr.buffer.write(b'caf\\xc3\\xa9 \\xff\\xfe end\\n')\n",
    )
    with capture_logs() as logs:
        results = run([hook])
    lines = [e for e in logs if e["event"] == "hook.output"]
    stdout = [e["line"] for e in lines if e["stream"] == "stdout"]
    assert [len(x) for x in stdout] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 10]
    stderr = [e["line"] for e in lines if e["stream"] == "stderr"]
    assert stderr == ["caf\u00e9 \ufffd\ufffd end"]
    assert results[0].ok


def test_a_json_object_line_is_logged_as_an_object_other_lines_as_text(hooks_dir: Path) -> None:
    """A hook's own structured log (e.g. `spotwatch ship` under the ship hook) nests in
    spotwatch's JSON log under "json"; anything that is not one JSON object stays a line."""
    lines = [
        '{"event": "ship.uploaded", "level": "info", "n": 3, "nested": {"a": [1, 2]}}',
        '{"padded": true}  ',
        '  {"leading": "space"}',
        "[1, 2]",
        "42",
        '{"cut": ',
        '{"not": NaN}',
        "{} trailing",
        "plain text",
    ]
    script = "".join(f"printf '%s\\n' '{line}'\n" for line in lines)
    hook = sh(hooks_dir, "10-json", script + "echo '{\"on\": \"stderr\"}' >&2\n")
    with capture_logs() as logs:
        [result] = run([hook])
    out = [e for e in logs if e["event"] == "hook.output"]
    as_json = [e["json"] for e in out if "json" in e]
    assert as_json == [
        {"event": "ship.uploaded", "level": "info", "n": 3, "nested": {"a": [1, 2]}},
        {"padded": True},
        {"on": "stderr"},
    ]
    assert not any("line" in e for e in out if "json" in e)
    assert [e["line"] for e in out if "line" in e] == lines[2:]
    # The drill's timeline keeps the text as printed.
    assert [o.text for o in result.output if o.stream == "stdout"] == lines


def test_a_json_line_nests_in_the_json_log_and_the_tail_is_parsed_too(
    hooks_dir: Path,
) -> None:
    import io

    from spotwatch import logs as logs_module

    out = io.StringIO()
    logs_module.configure("json", "info", stream=out)
    hook = sh(hooks_dir, "10-json", "echo first\nseq 1 5\necho '{\"event\": \"ship.done\"}'\n")
    run([hook], output_head=1, output_tail=1)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    logged = [e for e in events if e["event"] == "hook.output"]
    assert [e.get("line", e.get("json")) for e in logged] == ["first", {"event": "ship.done"}]


def test_hook_result_constructors_say_each_outcome_in_words(tmp_path: Path) -> None:
    hook = Hook("10-a", tmp_path / "10-a")
    ok = HookResult.finished(hook, 1.0, 2.5, 0)
    assert (ok.outcome, ok.exit_code, ok.signal, ok.description, ok.duration) == (
        OK, 0, None, "exit 0", 1.5)
    failed = HookResult.finished(hook, 1.0, 2.0, -9)
    assert (failed.outcome, failed.exit_code, failed.signal, failed.description) == (
        FAILED, None, 9, "killed by SIGKILL")
    late = HookResult.timed_out(hook, 1.0, 2.0, 0, 30.0)
    assert (late.outcome, late.exit_code, late.description) == (
        TIMED_OUT, 0, "timed out after 30.0 s (exit 0 after SIGTERM)")
    stuck = HookResult.timed_out(hook, 1.0, 2.0, None, 1.0)
    assert stuck.description == "timed out after 1.0 s (still running after SIGKILL)"
    assert HookResult.skipped(hook, 3.0, "no time").description == "skipped: no time"
    refused = HookResult.refused(hook, 3.0, "world-writable")
    assert (refused.outcome, refused.started_at, refused.ended_at, refused.path) == (
        REFUSED, 3.0, 3.0, str(tmp_path / "10-a"))
    assert HookResult.error(hook, 1.0, 1.0, "could not start: x").outcome == ERROR


def test_kept_output_is_bounded_and_within_the_log_bound_everything_is_logged(
    hooks_dir: Path,
) -> None:
    loop = "i=0\nwhile [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done\n"
    hook = sh(hooks_dir, "10-chatty", loop)
    with capture_logs() as logs:
        results = run([hook], output_head=500, output_tail=0)
    assert sum(1 for e in logs if e["event"] == "hook.output") == 500
    assert not [e for e in logs if e["event"] == "hook.output_truncated"]
    kept = results[0].output
    assert len(kept) == KEPT_LINES
    assert kept[-1].text == "line499" and kept[0].text == f"line{500 - KEPT_LINES}"


def test_a_chatty_hook_logs_its_first_and_last_lines_and_a_count_of_the_rest(
    hooks_dir: Path,
) -> None:
    # Both streams: the bound is per hook, not per stream.
    loop = "i=0\nwhile [ $i -lt 5000 ]; do echo line$i; i=$((i+1)); done\necho bye >&2\n"
    chatty = sh(hooks_dir, "10-chatty", loop)
    quiet = sh(hooks_dir, "20-quiet", "echo hello\n")
    with capture_logs() as logs:
        results = run([chatty, quiet], output_head=3, output_tail=2)
    lines = [(e["hook"], e["line"]) for e in logs if e["event"] == "hook.output"]
    assert lines == [
        ("10-chatty", "line0"),
        ("10-chatty", "line1"),
        ("10-chatty", "line2"),
        ("10-chatty", "line4999"),
        ("10-chatty", "bye"),
        ("20-quiet", "hello"),
    ]
    events = [e["event"] for e in logs if e.get("hook") == "10-chatty"]
    # The count comes before the last lines, and all of it before the hook's end.
    assert events[-4:] == ["hook.output_truncated", "hook.output", "hook.output", "hook.finished"]
    note = next(e for e in logs if e["event"] == "hook.output_truncated")
    assert (note["lines_left_out"], note["logged_first"], note["logged_last"]) == (4996, 3, 2)
    assert note["log_level"] == "warning"
    # What the drill shows is not cut by the log bound.
    assert results[0].output[-1].text == "bye" and len(results[0].output) == KEPT_LINES
    assert [r.outcome for r in results] == [OK, OK]


def test_no_tail_logs_the_first_lines_and_the_count(hooks_dir: Path) -> None:
    hook = sh(hooks_dir, "10-chatty", "seq 1 50\n")
    with capture_logs() as logs:
        run([hook], output_head=10, output_tail=0)
    logged = [e["line"] for e in logs if e["event"] == "hook.output"]
    assert logged == [str(i) for i in range(1, 11)]
    note = next(e for e in logs if e["event"] == "hook.output_truncated")
    assert (note["lines_left_out"], note["logged_last"]) == (40, 0)


def test_output_just_within_head_and_tail_is_all_logged_with_no_count(hooks_dir: Path) -> None:
    hook = sh(hooks_dir, "10-edge", "seq 1 15\n")
    with capture_logs() as logs:
        run([hook], output_head=10, output_tail=5)
    logged = [e["line"] for e in logs if e["event"] == "hook.output"]
    assert logged == [str(i) for i in range(1, 16)]
    assert not [e for e in logs if e["event"] == "hook.output_truncated"]


# --- time limits and killing -----------------------------------------------------------


def test_hanging_hook_is_terminated_and_the_next_runs(hooks_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "next-ran"
    hooks = [
        sh(hooks_dir, "10-hang", "echo started\nexec sleep 300\n"),
        sh(hooks_dir, "20-next", f"touch {marker}\n"),
    ]
    begun = time.monotonic()
    with capture_logs() as logs:
        results = run(hooks, hook_timeout=1.0, kill_grace=1.0)
    elapsed = time.monotonic() - begun
    assert results[0].outcome == TIMED_OUT
    assert results[0].description == "timed out after 1.0 s (killed by SIGTERM)"
    assert results[0].signal == signal.SIGTERM
    assert [line.text for line in results[0].output] == ["started"]
    assert results[1].outcome == OK and marker.exists()
    assert elapsed < 1.0 + 1.0 + SLACK
    assert "hook.timeout" in [e["event"] for e in logs]


def test_hook_that_traps_sigterm_gets_sigkill_after_the_grace(
    hooks_dir: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    hook = sh(
        hooks_dir,
        "10-stubborn",
        f"trap 'echo ignoring TERM' TERM\necho $$ > {pidfile}\n"
        "while :; do sleep 0.1; done\n",
    )
    begun = time.monotonic()
    with capture_logs() as logs:
        results = run([hook], hook_timeout=1.0, kill_grace=1.0)
    elapsed = time.monotonic() - begun
    result = results[0]
    assert result.outcome == TIMED_OUT
    assert result.description == "timed out after 1.0 s (killed by SIGKILL)"
    assert result.signal == signal.SIGKILL and result.exit_code is None
    assert "ignoring TERM" in [line.text for line in result.output]
    assert 2.0 <= elapsed < 2.0 + SLACK
    assert gone(read_pid(pidfile))
    assert [e["event"] for e in logs].count("hook.kill") == 1


def test_hook_that_exits_cleanly_on_sigterm_says_so(hooks_dir: Path) -> None:
    hook = sh(hooks_dir, "10-polite", "trap 'echo bye; exit 0' TERM\nwhile :; do sleep 0.1; done\n")
    results = run([hook], hook_timeout=1.0, kill_grace=5.0)
    assert results[0].outcome == TIMED_OUT
    assert results[0].description == "timed out after 1.0 s (exit 0 after SIGTERM)"
    assert results[0].duration < 1.0 + SLACK


def test_background_grandchild_holding_the_pipes_is_killed_with_the_group(
    hooks_dir: Path, tmp_path: Path, stray_pids: list[int]
) -> None:
    pidfile = tmp_path / "grandchild"
    marker = tmp_path / "next-ran"
    hooks = [
        sh(
            hooks_dir,
            "10-spawner",
            # The grandchild ignores TERM and keeps stdout/stderr open.
            f"(trap '' TERM; echo $$ > /dev/null; exec sleep 300) &\necho $! > {pidfile}\n"
            "trap '' TERM\nwhile :; do sleep 0.1; done\n",
        ),
        sh(hooks_dir, "20-next", f"touch {marker}\n"),
    ]
    begun = time.monotonic()
    results = run(hooks, hook_timeout=1.0, kill_grace=1.0)
    elapsed = time.monotonic() - begun
    grandchild = read_pid(pidfile)
    stray_pids.append(grandchild)
    assert results[0].outcome == TIMED_OUT
    assert "killed by SIGKILL" in results[0].description
    assert results[1].outcome == OK and marker.exists()
    assert elapsed < 2.0 + SLACK
    assert wait_for(lambda: gone(grandchild), 5)


def test_escaped_grandchild_holding_the_pipes_does_not_hang_the_runner(
    hooks_dir: Path, tmp_path: Path, stray_pids: list[int]
) -> None:
    pidfile = tmp_path / "escaped"
    hook = sh(
        hooks_dir,
        "10-escape",
        # A new session: out of reach of the group kill, and it holds the pipes.
        f"{sys.executable} -c 'import os, time; os.setsid(); time.sleep(300)' &\n"
        f"echo $! > {pidfile}\nexec sleep 300\n",
    )
    begun = time.monotonic()
    results = run([hook], hook_timeout=1.0, kill_grace=1.0)
    stray_pids.append(read_pid(pidfile))
    assert results[0].outcome == TIMED_OUT
    assert time.monotonic() - begun < 2.0 + SLACK


def test_hook_that_exits_leaving_a_background_child_on_its_pipes(
    hooks_dir: Path, tmp_path: Path, stray_pids: list[int]
) -> None:
    pidfile = tmp_path / "bg"
    hook = sh(hooks_dir, "10-leaves", f"sleep 300 &\necho $! > {pidfile}\necho done\nexit 0\n")
    begun = time.monotonic()
    with capture_logs() as logs:
        results = run([hook], hook_timeout=60.0)
    stray_pids.append(read_pid(pidfile))
    assert results[0].outcome == OK and results[0].description == "exit 0"
    assert [line.text for line in results[0].output] == ["done"]
    assert time.monotonic() - begun < SLACK  # not the 60 s timeout
    abandoned = [e for e in logs if e["event"] == "hook.output_abandoned"]
    assert len(abandoned) == 1 and "redirect" in abandoned[0]["advice"]


def test_deadline_bounds_the_timeout_and_the_grace(hooks_dir: Path) -> None:
    hook = sh(hooks_dir, "10-stubborn", "trap '' TERM\nwhile :; do sleep 0.1; done\n")
    begun = time.monotonic()
    results = run(
        [hook], deadline_mono=begun + 3.0, deadline_margin=1.5, hook_timeout=100, kill_grace=60
    )
    elapsed = time.monotonic() - begun
    result = results[0]
    assert result.outcome == TIMED_OUT
    assert result.description.startswith("timed out after ")
    assert float(result.description.split()[3]) <= 1.5
    assert result.description.endswith("(killed by SIGKILL)")
    # SIGKILL at the deadline at the latest, not 60 s of grace later.
    assert 2.5 <= elapsed < 3.0 + SLACK


def test_no_time_left_skips_without_starting(hooks_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hooks = [
        sh(hooks_dir, "10-slow", "sleep 1.5\n"),
        sh(hooks_dir, "20-late", f"touch {marker}\n"),
    ]
    started: list[str] = []
    finished: list[HookResult] = []
    with capture_logs() as logs:
        results = run(
            hooks,
            deadline_mono=time.monotonic() + 10.0 + 1.0,
            deadline_margin=10.0,
            on_start=lambda h: started.append(h.name),
            on_finish=finished.append,
        )
    assert results[0].outcome == TIMED_OUT  # bounded by the 1 s left before the margin
    assert results[1].outcome == SKIPPED and results[1].description == NO_TIME_LEFT
    assert results[1].exit_code is None and results[1].output == ()
    assert not marker.exists()
    assert started == ["10-slow"]
    assert finished == results
    assert any(e["event"] == "hook.skipped" and e["hook"] == "20-late" for e in logs)


def test_no_time_left_with_a_fake_clock(hooks_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hook = sh(hooks_dir, "10-a", f"touch {marker}\n")
    results = run(
        [hook], deadline_mono=1000.0, deadline_margin=10.0, clock=lambda: 990.0,
        wall_clock=lambda: 5.0,
    )
    assert [(r.outcome, r.started_at, r.ended_at) for r in results] == [(SKIPPED, 5.0, 5.0)]
    assert not marker.exists()


# --- stopping, callbacks, faults ---------------------------------------------------------


def test_should_stop_lets_the_running_hook_finish_and_starts_no_more(
    hooks_dir: Path, tmp_path: Path
) -> None:
    first_done = tmp_path / "first-done"
    second = tmp_path / "second"
    hooks = [
        sh(hooks_dir, "10-first", f"sleep 0.5\ntouch {first_done}\n"),
        sh(hooks_dir, "20-second", f"touch {second}\n"),
    ]
    stop = {"now": False}

    def on_start(hook: Hook) -> None:
        stop["now"] = True  # as if SIGTERM arrived while the first hook runs

    with capture_logs() as logs:
        results = run(hooks, should_stop=lambda: stop["now"], on_start=on_start)
    assert [r.name for r in results] == ["10-first"]
    assert results[0].outcome == OK and first_done.exists()
    assert not second.exists()
    stopped = [e for e in logs if e["event"] == "hooks.stopped"]
    assert stopped and stopped[0]["not_started"] == ["20-second"]
    assert (stopped[0]["log_level"], stopped[0]["reason"]) == ("warning",
                                                              "spotwatch is stopping")


def test_a_stop_with_a_reason_of_the_callers_says_it(hooks_dir: Path) -> None:
    hooks = [sh(hooks_dir, "10-first", "exit 0\n"), sh(hooks_dir, "20-second", "exit 0\n")]
    asked: list[str] = []

    def should_stop() -> bool | str:
        asked.append("?")
        return "the deadline came forward" if len(asked) > 1 else False

    with capture_logs() as logs:
        results = run(hooks, should_stop=should_stop)
    assert [r.name for r in results] == ["10-first"]
    [stopped] = [e for e in logs if e["event"] == "hooks.stopped"]
    assert (stopped["log_level"], stopped["reason"], stopped["not_started"]) == (
        "info", "the deadline came forward", ["20-second"])


def test_unstartable_hook_is_an_error_not_a_crash(hooks_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    no_shebang = hooks_dir / "10-no-shebang"
    no_shebang.write_bytes(b"\x7fELF garbage")
    no_shebang.chmod(0o755)
    hooks = [
        Hook("10-no-shebang", no_shebang),
        sh(hooks_dir, "20-bad-interp", "exit 0\n", interpreter="/nonexistent/sh"),
        sh(hooks_dir, "30-ok", f"touch {marker}\n"),
    ]
    results = run(hooks)
    assert results[0].outcome == ERROR and "could not start" in results[0].description
    assert "#!" in results[0].description
    assert results[1].outcome == ERROR and "interpreter" in results[1].description
    assert results[2].outcome == OK and marker.exists()


def test_hook_that_became_unsafe_since_planning_is_refused(hooks_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hook = sh(hooks_dir, "10-a", f"touch {marker}\n")
    hook.path.chmod(0o777)
    with capture_logs() as logs:
        results = run([hook])
    assert results[0].outcome == REFUSED and "world-writable" in results[0].description
    assert not marker.exists()
    assert any(e["event"] == "hook.refused" and e["log_level"] == "error" for e in logs)


def test_hook_removed_since_planning_is_skipped(hooks_dir: Path) -> None:
    hook = sh(hooks_dir, "10-a", "exit 0\n")
    hook.path.unlink()
    results = run([hook])
    assert results[0].outcome in (SKIPPED, ERROR)
    assert not results[0].ok


def test_callback_errors_are_logged_not_raised(hooks_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hooks = [sh(hooks_dir, "10-a", "exit 0\n"), sh(hooks_dir, "20-b", f"touch {marker}\n")]

    def boom(_: object) -> None:
        raise RuntimeError("journal on fire")

    with capture_logs() as logs:
        results = run(hooks, on_start=boom, on_finish=boom)
    assert [r.outcome for r in results] == [OK, OK] and marker.exists()
    assert sum(1 for e in logs if e["event"] == "hooks.callback_failed") == 4


def test_on_wait_runs_every_wait_tick_while_a_hook_runs(hooks_dir: Path) -> None:
    """The daemon pings systemd's watchdog from on_wait: the gaps between calls
    follow wait_tick, not the runner's one-second ceiling."""
    calls: list[float] = []
    results = run(
        [sh(hooks_dir, "10-slow", "sleep 1.5\n")],
        on_wait=lambda: calls.append(time.monotonic()),
        wait_tick=0.1,
    )
    assert [r.outcome for r in results] == [OK]
    gaps = sorted(later - earlier for earlier, later in zip(calls, calls[1:]))
    # 0.1 s asked for, about 15 calls; the one-second ceiling would give two or three.
    # The median, not the max: a loaded machine may delay one wake-up.
    assert len(calls) >= 6, calls
    assert gaps[len(gaps) // 2] < 0.5, gaps


def test_a_run_leaves_no_descriptor_open(hooks_dir: Path) -> None:
    """Pipes, pidfds and the run's /dev/null are all closed, whatever the outcome."""
    before = set(os.listdir("/proc/self/fd"))
    results = run(
        [
            sh(hooks_dir, "10-ok", "echo out; echo err >&2\n"),
            sh(hooks_dir, "20-fails", "exit 3\n"),
            sh(hooks_dir, "30-hangs", "exec sleep 30\n"),
        ],
        hook_timeout=0.5,
        kill_grace=0.5,
    )
    assert [r.outcome for r in results] == [OK, FAILED, TIMED_OUT]
    assert set(os.listdir("/proc/self/fd")) <= before


def test_an_interrupt_just_after_the_spawn_kills_the_hook_and_closes_its_pipes(
    hooks_dir: Path, spawn_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between the spawn and the session that watches the hook (here: while
    the session is made) leaves nothing behind, whichever way the hook started."""
    import spotwatch._hook_process as process_module

    pids: list[int] = []

    def interrupted_session(proc: Any, *args: Any) -> Any:
        pids.append(proc.pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(process_module, "Session", interrupted_session)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(KeyboardInterrupt):
        run([sh(hooks_dir, "10-hang", "exec sleep 300\n")])
    assert len(pids) == 1
    assert gone(pids[0])
    assert set(os.listdir("/proc/self/fd")) <= before


def test_describe_status() -> None:
    assert describe_status(0) == "exit 0"
    assert describe_status(3) == "exit 3"
    assert describe_status(-9) == "killed by SIGKILL"
    assert describe_status(-15) == "killed by SIGTERM"


def test_environment_that_cannot_be_passed_is_an_error_for_that_hook(
    hooks_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    hooks = [sh(hooks_dir, "10-a", "exit 0\n"), sh(hooks_dir, "20-b", f"touch {marker}\n")]
    import spotwatch._hook_process as process_module

    calls = {"n": 0}
    real_popen = process_module._PopenHook
    real_spawned = process_module._Spawned

    def popen_once_bad(path: str, env: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            env = {**env, "BAD": "nul\0byte"}
        return real_popen(path, env)

    def spawned_once_bad(path: str, env: Any, *rest: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            env = {**env, "BAD=": "x"}
        return real_spawned(path, env, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(process_module, "_PopenHook", popen_once_bad)
        mp.setattr(process_module, "_Spawned", spawned_once_bad)
        results = run(hooks)
    assert results[0].outcome == ERROR and "could not start" in results[0].description
    assert results[1].outcome == OK and marker.exists()


def test_a_name_only_posix_spawn_would_pass_is_refused_as_popen_does(hooks_dir: Path) -> None:
    """os.posix_spawn passes a name starting with "=" through; Popen refuses it.
    The runner behaves the same whichever way it starts hooks."""
    results = run([sh(hooks_dir, "10-a", "exit 0\n")], env={**BASE_ENV, "=C:": "x"})
    assert results[0].outcome == ERROR
    assert "illegal environment variable name" in results[0].description


def test_an_internal_error_costs_one_hook_not_the_rest(
    hooks_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spotwatch.runner as runner_module

    marker = tmp_path / "ran"
    hooks = [sh(hooks_dir, "10-a", "exit 0\n"), sh(hooks_dir, "20-b", f"touch {marker}\n")]
    real_check = runner_module.check_hook

    def check_that_breaks_once(path: Path, allowed: Any = None) -> Any:
        if path.name == "10-a":
            raise RuntimeError("bug")
        return real_check(path, allowed)

    monkeypatch.setattr(runner_module, "check_hook", check_that_breaks_once)
    with capture_logs() as logs:
        results = run(hooks)
    assert results[0].outcome == ERROR and "bug" in results[0].description
    assert results[1].outcome == OK and marker.exists()
    assert any(e["event"] == "hook.runner_error" for e in logs)


INTERRUPTED_RUNNER = """
import signal, sys, time
from pathlib import Path
# A job started in the background by a non-interactive shell (as CI may be) inherits
# SIGINT ignored, and Python then leaves it ignored: ask for Ctrl-C's usual effect.
signal.signal(signal.SIGINT, signal.default_int_handler)
from spotwatch.hooks import Hook
from spotwatch.runner import HookSettings, RunObserver, run_hooks
path, marker, hold = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "hold"
def on_start(hook):
    marker.write_text("on_start")
    if hold:  # the runner just after the spawn, where Ctrl-C once leaked the hook
        time.sleep(300)
run_hooks([Hook(path.name, path)], {"PATH": "/usr/bin:/bin"}, HookSettings(hook_timeout=300),
          observer=RunObserver(on_start=on_start))
"""


@pytest.mark.parametrize("hold", ["run", "hold"], ids=["while it runs", "in on_start"])
def test_ctrl_c_in_the_runner_kills_the_running_hook(
    hooks_dir: Path, tmp_path: Path, hold: str
) -> None:
    pidfile, marker = tmp_path / "pid", tmp_path / "on_start"
    hook = sh(hooks_dir, "10-hang", f"echo $$ > {pidfile}\nexec sleep 300\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_RUNNER, str(hook.path), str(marker), hold],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        hook_pid = read_pid(pidfile)
        assert wait_for(marker.exists)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode != 0
    assert wait_for(lambda: gone(hook_pid), 10)


class _RecordingPoll:
    """select.poll() that records what each poll() call returned, and what was registered."""

    def __init__(self) -> None:
        import select

        self._poll = select.poll()
        self.registered: list[int] = []
        self.results: list[list[tuple[int, int]]] = []

    def register(self, fd: int, events: int) -> None:
        self.registered.append(fd)
        self._poll.register(fd, events)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        result = self._poll.poll(timeout)
        self.results.append(result)
        return result


def test_only_the_exit_wakes_the_runner_not_the_end_of_the_pipes(
    hooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner keeps the pipes' write ends until the hook has exited: a hook that
    closes its output (or exits, which closes it a moment before the exit is seen)
    does not wake the runner with an end of file; the pidfd does, once."""
    import select
    import types

    import spotwatch.runner as runner_module

    if not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfds on this kernel or Python")
    recorder = _RecordingPoll()
    fake_select = types.SimpleNamespace(**vars(select))
    fake_select.poll = lambda: recorder
    monkeypatch.setattr(runner_module, "select", fake_select)
    hook = sh(hooks_dir, "10-closes-early", "echo before\nexec >&- 2>&-\nsleep 0.3\n")
    begun = time.monotonic()
    [result] = run([hook])
    assert time.monotonic() - begun >= 0.3
    assert result.outcome == OK
    assert [line.text for line in result.output] == ["before"]
    pidfd = recorder.registered[2]  # after stdout's and stderr's pipes
    woken_by_exit = next(
        i for i, events in enumerate(recorder.results) if any(fd == pidfd for fd, _ in events)
    )
    before_exit = recorder.results[:woken_by_exit]
    assert not any(ev & select.POLLHUP for events in before_exit for _, ev in events), before_exit


def test_without_pidfds_exits_and_timeouts_are_still_seen(
    hooks_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stray_pids: list[int]
) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)  # as on kernels before 5.3
    pidfile = tmp_path / "bg"
    hooks = [
        sh(hooks_dir, "10-quick", "echo hi\nexit 4\n"),
        sh(hooks_dir, "20-closes-pipes", "exec >/dev/null 2>&1\nsleep 0.3\n"),
        sh(hooks_dir, "30-leaves", f"sleep 300 &\necho $! > {pidfile}\n"),
        sh(hooks_dir, "40-hang", "trap '' TERM\nwhile :; do sleep 0.1; done\n"),
    ]
    begun = time.monotonic()
    results = run(hooks, hook_timeout=1.0, kill_grace=0.5)
    stray_pids.append(read_pid(pidfile))
    assert [r.description for r in results] == [
        "exit 4",
        "exit 0",
        "exit 0",
        "timed out after 1.0 s (killed by SIGKILL)",
    ]
    assert [line.text for line in results[0].output] == ["hi"]
    assert time.monotonic() - begun < 1.0 + 0.5 + 1.0 + 0.3 + SLACK


def test_an_inheritable_descriptor_of_the_daemon_does_not_reach_hooks(
    hooks_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fds"
    hook = sh(hooks_dir, "10-fds", f"ls /proc/$$/fd > {out}\n")
    leaked = os.open(os.devnull, os.O_RDONLY)
    try:
        os.set_inheritable(leaked, True)
        [result] = run([hook])
    finally:
        os.close(leaked)
    assert result.outcome == OK
    fds = {int(name) for name in out.read_text().split()}
    assert leaked not in fds
    assert {0, 1, 2} <= fds
