"""hooks.d/50-ship-logs.sh runs `spotwatch ship` with the hook environment.

(shellcheck, the mode in git and the unconfigured skip are checked for every
example hook in test_example_hooks.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
HOOK = REPO / "hooks.d" / "50-ship-logs.sh"

pytestmark = pytest.mark.slow


def hook_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    env.update(
        SPOTWATCH_EVENT="spot-interruption",
        SPOTWATCH_ACTION="terminate",
        SPOTWATCH_NOTICE_TIME="2026-11-26T03:00:25Z",
        SPOTWATCH_INSTANCE_ID="i-0123456789abcdef0",
        SPOTWATCH_REGION="us-east-1",
        SPOTWATCH_DRILL="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def spotwatch_bin(tmp_path: Path) -> str:
    """What SPOTWATCH_BIN points at: this checkout's spotwatch in this interpreter."""
    wrapper = tmp_path / "bin" / "spotwatch"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m spotwatch "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_the_hook_ships_the_configured_paths_within_the_hook_budget(
    tmp_path: Path, aws_env: dict[str, str], spotwatch_bin: str
) -> None:
    import boto3

    s3: Any = boto3.client("s3", region_name="us-east-1")
    bucket = f"hook-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.log").write_bytes(b"hello from the app\n" * 100)
    (tmp_path / "extra.log").write_bytes(b"extra\n")
    now = int(time.time())
    env = hook_env(
        SPOTWATCH_S3_BUCKET=bucket,
        SPOTWATCH_S3_PREFIX="fleet",
        SPOTWATCH_SHIP_PATHS=f"{app} {tmp_path}/*.log",
        SPOTWATCH_SHIP_ARGS="--json --concurrency 4",
        SPOTWATCH_BIN=spotwatch_bin,
        SPOTWATCH_DEADLINE=str(now + 120),
        SPOTWATCH_HOOK_TIMEOUT="30",
    )
    result = subprocess.run(
        [str(HOOK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_shipped"] == 2
    # The hook timeout (30 s) comes before the deadline less its margin (110 s).
    assert now + 29 <= summary["deadline"] <= now + 35
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    base = "fleet/i-0123456789abcdef0/20261126T030025Z/"
    assert keys == {
        base + str(app / "app.log").lstrip("/") + ".gz",
        base + str(tmp_path / "extra.log").lstrip("/") + ".gz",
    }


def test_the_hook_uses_the_deadline_less_the_margin_when_that_comes_first(
    tmp_path: Path, spotwatch_bin: str
) -> None:
    (tmp_path / "a.log").write_bytes(b"a\n")
    now = int(time.time())
    env = hook_env(
        SPOTWATCH_S3_BUCKET="logs-bucket",
        SPOTWATCH_SHIP_PATHS=str(tmp_path),
        SPOTWATCH_SHIP_ARGS="--dry-run --json",
        SPOTWATCH_BIN=spotwatch_bin,
        SPOTWATCH_DEADLINE=str(now + 40),
        SPOTWATCH_DEADLINE_MARGIN="15",
        SPOTWATCH_HOOK_TIMEOUT="600",
    )
    result = subprocess.run(
        [str(HOOK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deadline"] == now + 25
