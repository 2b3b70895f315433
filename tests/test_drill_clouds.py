"""``spotwatch drill --cloud gcp|azure``: the simulator speaks that cloud's protocol."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, make_hooks_dir, wait_until, write_hook

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    d = make_hooks_dir(tmp_path)
    write_hook(d, "10-show", 'echo "$SPOTWATCH_CLOUD $SPOTWATCH_EVENT $SPOTWATCH_ACTION"')
    return d


@pytest.mark.parametrize(
    ("cloud", "event", "expected", "lead"),
    [
        ("gcp", "spot", "gcp spot-interruption terminate", 30.0),
        ("gcp", "maintenance", "gcp scheduled-maintenance terminate", 60.0),
        ("azure", "spot", "azure spot-interruption terminate", 20.0),
        ("azure", "maintenance", "azure scheduled-maintenance terminate", 20.0),
    ],
)
def test_drill_rehearses_each_cloud(
    hooks_dir: Path, cloud: str, event: str, expected: str, lead: float
) -> None:
    from spotwatch.drill import DrillOptions, render_text, run_drill

    report = run_drill(
        DrillOptions(hooks_dir=hooks_dir, notice_in=0.5, lead=20.0, cloud=cloud, event=event)
    )
    assert report.ok, render_text(report)
    assert report.cloud == cloud and report.notice_seen is not None
    assert report.notice_seen - 0.5 < 1.5  # Google: at once; Azure: within its 1 s poll
    (hook,) = report.hooks
    assert hook.output[0].text == expected
    assert abs(report.deadline - report.notice_seen - lead) < 2.0


def test_aws_only_events_are_a_usage_error_elsewhere(hooks_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--hooks-dir", str(hooks_dir),
         "--cloud", "gcp", "--event", "asg"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--event asg exists on AWS only" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("cloud", ["gcp", "azure"])
def test_the_simulator_runs_alone(cloud: str) -> None:
    import signal

    import requests

    proc = subprocess.Popen(
        [sys.executable, "-m", "spotwatch.imdssim", "--cloud", cloud, "--port", "0",
         "--notice-in", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        # "--notice-in 0": the notice appears at once (Google's from a timer thread).
        def notice_served() -> bool:
            if cloud == "gcp":
                resp = requests.get(url + "/computeMetadata/v1/instance/preempted",
                                    headers={"Metadata-Flavor": "Google"}, timeout=5)  # fmt: skip
                return resp.text == "TRUE"
            resp = requests.get(url + "/metadata/scheduledevents?api-version=2020-07-01",
                                headers={"Metadata": "true"}, timeout=5)  # fmt: skip
            return [e["EventType"] for e in resp.json()["Events"]] == ["Preempt"]

        wait_until(notice_served, 10, f"the {cloud} simulator to serve the notice")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize(("cloud", "lead"), [("azure", 30.0), ("aws", 120.0)])
def test_the_default_lead_is_the_clouds_own(hooks_dir: Path, cloud: str, lead: float) -> None:
    """Azure's least notice for a Spot eviction is 30 s, not the spot notice's two minutes."""
    import json

    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--hooks-dir", str(hooks_dir),
         "--cloud", cloud, "--in", "0.5", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert abs(report["lead"] - lead) < 1.0, report["lead"]


SHOW_ENV = """
echo "event=$SPOTWATCH_EVENT action=$SPOTWATCH_ACTION drill=$SPOTWATCH_DRILL"
env | grep -E '^SPOTWATCH_(MAINTENANCE|AZURE)_' | sort
"""


def _drill_json(hooks_dir: Path, *args: str) -> tuple[dict[str, object], dict[str, str]]:
    """Run ``spotwatch drill --json`` as a user would; (the report, the hook's variables)."""
    import json

    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--hooks-dir", str(hooks_dir),
         "--in", "0.5", "--json", *args],
        cwd=REPO, capture_output=True, text=True, timeout=80,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    (hook,) = report["hooks"]
    seen: dict[str, str] = {}
    for line in hook["output"]:
        text = line["text"]
        # The first line is three words; each next line one NAME=value.
        for word in text.split(" ") if text.startswith("event=") else [text]:
            key, _, value = word.partition("=")
            seen[key] = value
    return report, seen


def test_drill_rehearses_googles_upcoming_maintenance(tmp_path: Path) -> None:
    d = make_hooks_dir(tmp_path)
    write_hook(d, "10-env", SHOW_ENV)
    report, env = _drill_json(
        d, "--cloud", "gcp", "--event", "upcoming-maintenance", "--lead", "20"
    )
    assert report["ok"] is True and report["event"] == "upcoming-maintenance"
    assert env["event"] == "scheduled-maintenance" and env["action"] == "terminate"
    assert env["drill"] == "1"
    assert env["SPOTWATCH_MAINTENANCE_EVENT_ID"] == "upcoming-maintenance"
    # The window announced, as the hooks must see it: the report's notice time.
    assert env["SPOTWATCH_MAINTENANCE_WINDOW_START"] == report["notice_time"]
    assert env["SPOTWATCH_MAINTENANCE_STATUS"] == "PENDING"
    assert env["SPOTWATCH_MAINTENANCE_TYPE"] == "SCHEDULED"
    # Due --lead before the window (--maintenance-lead is --lead), never before --in.
    seen = report["notice_seen"]
    assert isinstance(seen, float) and 0.5 <= seen < 0.5 + 3.0
    assert isinstance(report["deadline"], float)
    assert 18.0 < report["deadline"] - seen < 21.0


def test_drill_rehearses_azures_rebalance_recommendation(tmp_path: Path) -> None:
    d = make_hooks_dir(tmp_path)
    write_hook(d, "10-env", SHOW_ENV)
    report, env = _drill_json(d, "--cloud", "azure", "--event", "rebalance")
    assert report["ok"] is True and report["event"] == "rebalance"
    assert env["event"] == "rebalance-recommendation" and env["action"] == "rebalance"
    assert env["SPOTWATCH_AZURE_EVENT_TYPE"] == "SpotRebalanceRecommendation"
    assert env["SPOTWATCH_AZURE_EVENT_SOURCE"] == "Platform"
    assert env["SPOTWATCH_AZURE_EVENT_STATUS"] == "Scheduled"
    assert env["SPOTWATCH_AZURE_EVENT_ID"]
    # Advisory: spotwatch's own two minutes from sight, whatever --lead says.
    seen = report["notice_seen"]
    assert isinstance(seen, float) and isinstance(report["deadline"], float)
    assert abs(report["deadline"] - seen - 120.0) < 2.0


def test_a_rebalance_drill_speaks_of_the_deadline(hooks_dir: Path) -> None:
    from spotwatch.drill import DrillOptions, render_text, run_drill

    report = run_drill(
        DrillOptions(hooks_dir=hooks_dir, notice_in=0.5, cloud="azure", event="rebalance")
    )
    text = render_text(report)
    assert report.ok, text
    assert "s left before the deadline" in text and "interruption" not in text
    assert "SpotRebalanceRecommendation" in text
    assert report.hooks[0].output[0].text == "azure rebalance-recommendation rebalance"


@pytest.mark.parametrize(("cloud", "event"), [("aws", "upcoming-maintenance"),
                                              ("azure", "upcoming-maintenance")])  # fmt: skip
def test_googles_upcoming_maintenance_is_a_usage_error_elsewhere(
    hooks_dir: Path, cloud: str, event: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--hooks-dir", str(hooks_dir),
         "--cloud", cloud, "--event", event],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"--event {event} exists on Google only" in proc.stderr
    assert "Traceback" not in proc.stderr
