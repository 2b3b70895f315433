"""``spotwatch drill --cloud alibaba|tencent``: the reclaim time on the cloud's own
simulator, Alibaba's read with a token, Tencent's written in UTC+8."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, make_hooks_dir, write_hook

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    d = make_hooks_dir(tmp_path)
    write_hook(
        d, "10-show",
        'echo "$SPOTWATCH_CLOUD $SPOTWATCH_EVENT $SPOTWATCH_ACTION $SPOTWATCH_DRILL '
        '$SPOTWATCH_DEADLINE"',
    )  # fmt: skip
    return d


@pytest.mark.parametrize("cloud", ["alibaba", "tencent"])
def test_drill_rehearses_the_reclaim(hooks_dir: Path, cloud: str) -> None:
    from spotwatch.drill import DrillOptions, render_text, run_drill

    report = run_drill(DrillOptions(hooks_dir=hooks_dir, notice_in=0.5, lead=40.0, cloud=cloud))
    assert report.ok, render_text(report)
    assert report.cloud == cloud and report.notice_seen is not None
    assert report.notice_seen - 0.5 < 2.5  # within its 1 s poll, on a loaded machine
    (hook,) = report.hooks
    shown_cloud, event, action, drill, deadline = hook.output[0].text.split()
    assert (shown_cloud, event, action, drill) == (cloud, "spot-interruption", "terminate", "1")
    # The deadline is the announced time (Tencent's read in UTC+8, not 8 h off).
    assert abs(int(deadline) - (report.began_at + 0.5 + 40.0)) <= 1.0
    assert abs(report.deadline - report.notice_seen - 40.0) < 2.5
    if cloud == "tencent":
        assert "T" not in report.notice_time and "Z" not in report.notice_time


def test_maintenance_is_a_usage_error_on_tencent(hooks_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--hooks-dir", str(hooks_dir),
         "--cloud", "tencent", "--event", "maintenance"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "announces only the spot reclaim" in proc.stderr
    assert "Traceback" not in proc.stderr
