"""The example hooks in hooks.d/: shellcheck, names and modes, and what they do when run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
HOOKS_DIR = REPO / "hooks.d"
HOOKS = sorted(p for p in HOOKS_DIR.iterdir() if p.is_file())
CHECKPOINT = HOOKS_DIR / "10-checkpoint.sh"
WEBHOOK = HOOKS_DIR / "90-notify-webhook.sh"


def notice_env(**extra: str) -> dict[str, str]:
    """A drill's hook environment on a fresh machine: no hook settings at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    env.update(
        {
            "SPOTWATCH_EVENT": "spot-interruption",
            "SPOTWATCH_ACTION": "terminate",
            "SPOTWATCH_NOTICE_TIME": "2026-11-26T03:00:25Z",
            "SPOTWATCH_DEADLINE": str(int(time.time()) + 120),
            "SPOTWATCH_SECONDS_LEFT": "118",
            "SPOTWATCH_NOTICE_ID": "0123456789abcdef",
            "SPOTWATCH_INSTANCE_ID": "i-0123456789abcdef0",
            "SPOTWATCH_INSTANCE_TYPE": "m5.large",
            "SPOTWATCH_REGION": "us-east-1",
            "SPOTWATCH_AZ": "us-east-1a",
            "SPOTWATCH_DRILL": "1",
        }
    )
    env.update(extra)
    return env


def run_hook(
    hook: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hook)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )


# -- every hook ----------------------------------------------------------------------


def test_there_are_example_hooks() -> None:
    names = {p.name for p in HOOKS}
    assert {CHECKPOINT.name, WEBHOOK.name} <= names


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck is not installed (Debian package 'shellcheck'; CI installs it)",
)
@pytest.mark.parametrize("hook", HOOKS, ids=lambda p: p.name)
def test_shellcheck(hook: Path) -> None:
    result = subprocess.run(
        ["shellcheck", "--norc", str(hook)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("hook", HOOKS, ids=lambda p: p.name)
def test_is_a_runnable_hook(hook: Path) -> None:
    from spotwatch.hooks import name_problem

    assert os.access(hook, os.X_OK), f"chmod +x {hook} (and commit the mode)"
    assert hook.read_text().startswith("#!")
    tracked = subprocess.run(
        ["git", "ls-files", "-s", "--", str(hook)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    if tracked.returncode == 0 and tracked.stdout:
        assert tracked.stdout.startswith("100755"), f"git update-index --chmod=+x {hook}"
    # A name spotwatch runs, and so does its installed, disabled copy not.
    assert name_problem(hook.name) is None
    assert name_problem(hook.name + ".disabled") is not None


def test_order_is_checkpoint_first_notify_last() -> None:
    from spotwatch.hooks import sort_key

    names = sorted((p.name for p in HOOKS), key=sort_key)
    assert names[0] == CHECKPOINT.name and names[-1] == WEBHOOK.name


@pytest.mark.parametrize("hook", HOOKS, ids=lambda p: p.name)
def test_runs_green_unconfigured(hook: Path) -> None:
    """A drill on a fresh machine: nothing configured, every example skips and says why."""
    result = run_hook(hook, notice_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skip" in (result.stdout + result.stderr).lower()


# -- the webhook hook -----------------------------------------------------------------------


class Webhook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.delay = 0.0
        self.release = threading.Event()


@pytest.fixture
def webhook() -> Iterator[tuple[Webhook, str]]:
    state = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.headers.append(dict(self.headers))
            state.bodies.append(json.loads(body))
            if state.delay:
                state.release.wait(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/secret"
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def no_proxy_env(**extra: str) -> dict[str, str]:
    """The hook's environment for `spotwatch notify`: this checkout's spotwatch, a fresh
    state directory (so each test sends its own message), no proxies."""
    import tempfile

    wrapper_dir = Path(tempfile.mkdtemp(prefix="notify-bin-"))
    wrapper = wrapper_dir / "spotwatch"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m spotwatch "$@"\n')
    wrapper.chmod(0o755)
    extra.setdefault("SPOTWATCH_BIN", str(wrapper))
    extra.setdefault("SPOTWATCH_STATE_DIR", str(wrapper_dir / "state"))
    extra.setdefault("PYTHONPATH", str(REPO))
    env = notice_env(**extra)
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    return env


def test_webhook_posts_slack_json(webhook: tuple[Webhook, str]) -> None:
    state, url = webhook
    result = run_hook(WEBHOOK, no_proxy_env(SPOTWATCH_WEBHOOK_URL=url))
    assert result.returncode == 0, result.stderr
    assert len(state.bodies) == 1
    text = state.bodies[0]["text"]
    assert text.startswith("[drill] spot-interruption on i-0123456789abcdef0")
    assert "m5.large" in text and "terminate" in text and "118 s left" in text
    assert state.headers[0]["Content-Type"] == "application/json"
    assert "secret" not in result.stdout + result.stderr  # the URL is not logged


def test_webhook_escapes_json(webhook: tuple[Webhook, str]) -> None:
    state, url = webhook
    env = no_proxy_env(SPOTWATCH_WEBHOOK_URL=url, SPOTWATCH_NOTICE_TIME='not "a" time\\')
    assert run_hook(WEBHOOK, env).returncode == 0
    assert 'not "a" time\\' in state.bodies[0]["text"]


def test_webhook_http_error_fails_the_hook(webhook: tuple[Webhook, str]) -> None:
    state, url = webhook
    state.status = 403
    result = run_hook(WEBHOOK, no_proxy_env(SPOTWATCH_WEBHOOK_URL=url))
    assert result.returncode != 0
    assert "403" in result.stderr
    assert len(state.bodies) == 1  # a 403 is not tried again


def test_webhook_gives_up_in_its_time(webhook: tuple[Webhook, str]) -> None:
    state, url = webhook
    state.delay = 60
    started = time.monotonic()
    env = no_proxy_env(SPOTWATCH_WEBHOOK_URL=url, SPOTWATCH_WEBHOOK_TIMEOUT="1",
                       SPOTWATCH_DEADLINE=str(int(time.time()) + 6))
    result = run_hook(WEBHOOK, env, timeout=30)
    assert result.returncode != 0
    assert time.monotonic() - started < 20  # bounded by its timeout, not the server


# -- the checkpoint hook -------------------------------------------------------------------

APP = """
import signal, sys, time
path = sys.argv[1]
def checkpoint(signum, frame):
    with open(path, "w") as f:
        f.write("state")
if sys.argv[2] == "cooperative":
    signal.signal(signal.SIGUSR1, checkpoint)
else:
    signal.signal(signal.SIGUSR1, lambda s, f: None)  # ignores the request
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def app_and_systemctl(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[Any]]]:
    """A stand-in application and a systemctl on PATH that reports its MainPID."""
    procs: list[subprocess.Popen[str]] = []
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "main.pid"
    pid_file.write_text("0")
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(
        f'#!/bin/sh\n[ "$1 $2 $3" = "show --property=MainPID --value" ] || exit 3\n'
        f'cat "{pid_file}"\n'
    )
    systemctl.chmod(0o755)
    env = notice_env(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        SPOTWATCH_CHECKPOINT_SERVICE="myapp.service",
        SPOTWATCH_CHECKPOINT_FILE=str(tmp_path / "checkpoint"),
    )

    def start(kind: str) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", APP, str(tmp_path / "checkpoint"), kind],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        pid_file.write_text(f"{proc.pid}\n")

    try:
        yield tmp_path / "checkpoint", env, [start]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def test_checkpoint_signals_and_waits_for_the_file(
    app_and_systemctl: tuple[Path, dict[str, str], list[Any]],
) -> None:
    checkpoint, env, (start,) = app_and_systemctl
    start("cooperative")
    checkpoint.write_text("an old checkpoint")  # must not count as the new one
    os.utime(checkpoint, (time.time() - 60, time.time() - 60))
    result = run_hook(CHECKPOINT, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert checkpoint.read_text() == "state"
    assert "sent SIGUSR1 to myapp.service" in result.stdout
    assert "wrote" in result.stdout


def test_checkpoint_fails_when_no_checkpoint_appears(
    app_and_systemctl: tuple[Path, dict[str, str], list[Any]],
) -> None:
    checkpoint, env, (start,) = app_and_systemctl
    start("ignores")
    result = run_hook(CHECKPOINT, {**env, "SPOTWATCH_CHECKPOINT_WAIT": "1"})
    assert result.returncode == 1
    assert "did not write" in result.stderr
    assert not checkpoint.exists()


def test_checkpoint_wait_is_cut_to_the_deadline(
    app_and_systemctl: tuple[Path, dict[str, str], list[Any]],
) -> None:
    _, env, (start,) = app_and_systemctl
    start("ignores")
    started = time.monotonic()
    # 12 s left, 10 s margin: it may wait 2 s, not the 60 s default.
    result = run_hook(CHECKPOINT, {**env, "SPOTWATCH_SECONDS_LEFT": "12"})
    assert result.returncode == 1
    assert "within 2 s" in result.stderr
    assert time.monotonic() - started < 30


def test_checkpoint_of_a_stopped_service_fails(
    app_and_systemctl: tuple[Path, dict[str, str], list[Any]],
) -> None:
    _, env, _ = app_and_systemctl  # MainPID is 0: not running
    result = run_hook(CHECKPOINT, env)
    assert result.returncode == 1
    assert "myapp.service is not running" in result.stderr
