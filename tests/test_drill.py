"""``spotwatch drill`` as a subprocess: the real watcher, the IMDS simulator, real hooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, write_hook
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def drill(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--in", "0.5", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip



def test_the_example_hooks_are_green_on_a_fresh_machine() -> None:
    proc = drill("--hooks-dir", "hooks.d")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "PASS" in out
    for name in ("10-checkpoint.sh", "50-ship-logs.sh", "90-notify-webhook.sh"):
        assert f"ok   {name}: exit 0" in out
    assert out.index("notice out") < out.index("notice seen") < out.index("> 10-checkpoint.sh")


def test_hooks_see_the_drill_and_their_output_is_on_the_timeline(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-env", 'echo "drill=$SPOTWATCH_DRILL action=$SPOTWATCH_ACTION"')
    proc = drill("--hooks-dir", str(hooks_dir), "--action", "stop")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| out: drill=1 action=stop" in proc.stdout


def test_a_failing_hook_fails_the_drill_and_the_rest_still_run(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-broken", "echo 'cannot reach the app' >&2\nexit 4")
    write_hook(hooks_dir, "20-fine", "echo fine")
    proc = drill("--hooks-dir", str(hooks_dir))
    assert proc.returncode == 1
    assert "FAIL 10-broken: exit 4" in proc.stdout
    assert "| err: cannot reach the app" in proc.stdout
    assert "ok   20-fine: exit 0" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("FAIL: 10-broken: exit 4")


def test_a_hook_that_outlasts_a_short_lead_fails_the_drill(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-slow", "sleep 30")
    proc = drill("--hooks-dir", str(hooks_dir), "--lead", "4", "--deadline-margin", "1")
    assert proc.returncode == 1
    assert "10-slow: timed out" in proc.stdout


def test_json_carries_the_same_timeline(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-a", "echo one")
    write_hook(hooks_dir, "20-b", "echo two >&2; exit 2")
    proc = drill("--hooks-dir", str(hooks_dir), "--json", "--lead", "60")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert report["lead"] == 60
    assert report["notice_seen"] >= report["notice_appeared"]
    assert [h["name"] for h in report["hooks"]] == ["10-a", "20-b"]
    a, b = report["hooks"]
    assert a["outcome"] == "ok" and a["output"][0]["text"] == "one"
    assert b["exit_code"] == 2 and b["output"][0] == {**b["output"][0], "stream": "stderr"}
    assert a["started"] <= a["ended"] <= b["started"] <= b["ended"]
    assert 0 < report["seconds_left"] <= 60
    assert report["failures"] == ["20-b: exit 2"]


def test_unsafe_hooks_are_reported_and_fail_the_drill(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-ok", "true")
    write_hook(hooks_dir, "20-writable", "true").chmod(0o777)
    write_hook(hooks_dir, "30-no-exec", "true", mode=0o644)
    proc = drill("--hooks-dir", str(hooks_dir))
    assert proc.returncode == 1
    assert "REFUSED        20-writable" in proc.stdout
    assert "30-no-exec: not executable" in proc.stdout


def test_a_missing_hooks_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = drill("--hooks-dir", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_as_hooks_directory_is_not_a_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "hooks.d"
    a_file.write_text("")
    proc = drill("--hooks-dir", str(a_file))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert f"hooks directory {a_file} is not a directory" in proc.stderr


@pytest.mark.parametrize("event", ["rebalance", "maintenance", "asg"])
def test_each_source_is_rehearsed(hooks_dir: Path, event: str) -> None:
    from spotwatch.drill import DrillOptions, render_text, report_as_dict, run_drill

    write_hook(hooks_dir, "10-show", 'echo "$SPOTWATCH_EVENT $SPOTWATCH_ACTION"')
    report = run_drill(
        DrillOptions(hooks_dir=hooks_dir, notice_in=0.5, lead=20.0, event=event, watch=("spot",))
    )
    assert report.ok, render_text(report)
    assert report.event == event and report.notice_seen is not None
    (hook,) = report.hooks
    kind = {"rebalance": "rebalance-recommendation", "maintenance": "scheduled-maintenance",
            "asg": "asg-termination"}[event]  # fmt: skip
    assert hook.output[0].text.startswith(kind)
    # Auto Scaling and maintenance: --lead from the notice; rebalance: two minutes.
    expected = 120.0 if event == "rebalance" else 20.0
    assert abs(report.deadline - report.notice_seen - expected) < 2.0
    assert json.loads(json.dumps(report_as_dict(report)))["event"] == event


def test_an_unsafe_hooks_directory_names_the_fix_on_the_fail_line(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-ok", "true")
    hooks_dir.chmod(0o775)
    proc = drill("--hooks-dir", str(hooks_dir))
    assert proc.returncode == 1
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("FAIL: ") and f"chmod go-w {hooks_dir}" in last, proc.stdout


def test_a_lead_inside_the_margin_hints_at_the_deadline_margin(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-a", "true")
    write_hook(hooks_dir, "20-b", "true")
    proc = drill("--hooks-dir", str(hooks_dir), "--lead", "5")
    assert proc.returncode == 1
    for name in ("10-a", "20-b"):
        assert f"FAIL {name}: skipped: no time left" in proc.stdout, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert "--deadline-margin 10 s" in last and "smaller --deadline-margin" in last, last


def test_enough_time_gives_no_margin_hint(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-a", "true")
    proc = drill("--hooks-dir", str(hooks_dir), "--lead", "30", "--deadline-margin", "1")
    assert proc.returncode == 0, proc.stdout
    assert "hint" not in proc.stdout


def test_the_rebalance_drill_speaks_of_no_interruption(hooks_dir: Path) -> None:
    write_hook(hooks_dir, "10-a", "true")
    proc = drill("--hooks-dir", str(hooks_dir), "--event", "rebalance")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "interruption" not in proc.stdout
    assert "s left before the deadline" in proc.stdout
