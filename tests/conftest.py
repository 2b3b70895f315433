"""What every test gets without asking (a fresh structlog, the check that a test
using a slow fixture is marked slow) and the session-wide servers (moto, the
one-file build). Helpers a test asks for by name, fixtures
included, are in tests/helpers.py and imported from there."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.helpers import REPO, free_port

# Fixtures that start processes or moto: a test that asks for one is end to end, and
# must be marked slow, or the quick loop (pytest -m "not slow") would not be quick.
SLOW_FIXTURES = frozenset({"daemons", "moto_server", "aws_env", "make_fleet", "watches", "pyz"})


def unmarked_slow_fixtures(fixturenames: Iterable[str], marked_slow: bool) -> list[str]:
    """The slow fixtures a test uses without being marked slow (none when marked)."""
    return [] if marked_slow else sorted(SLOW_FIXTURES.intersection(fixturenames))


@pytest.fixture(autouse=True)
def _slow_is_marked(request: pytest.FixtureRequest) -> None:
    """Fails a test that uses a slow fixture without the ``slow`` mark, before its
    function-scoped fixtures start anything."""
    marked = request.node.get_closest_marker("slow") is not None
    missing = unmarked_slow_fixtures(request.fixturenames, marked)
    if missing:
        pytest.fail(
            f"uses {', '.join(missing)}, which start processes or servers: mark the test "
            "@pytest.mark.slow (or the module: pytestmark = pytest.mark.slow)",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Each test starts and ends with structlog's defaults: a test that points the
    log at its own (later closed) stream must not break the tests after it."""
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server in a thread of this process, on 127.0.0.1; yields its URL.

    In-process on purpose: tests can reach moto's backend objects directly
    (e.g. to set a spot request's status code), while boto3 and the
    ``spotwatch`` subprocesses talk to it over real HTTP.
    """
    from moto.server import ThreadedMotoServer
    from moto.sqs.models import Queue, SQSBackend

    original_receive = SQSBackend.receive_message
    original_delete = Queue.delete_message
    lock = threading.Lock()
    SQSBackend.receive_message = _atomic_receive(original_receive, lock)  # type: ignore[method-assign]
    Queue.delete_message = _atomic_delete(original_delete, lock)  # type: ignore[method-assign]
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        SQSBackend.receive_message = original_receive  # type: ignore[method-assign]
        Queue.delete_message = original_delete  # type: ignore[method-assign]


def _atomic_receive(receive: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    """SQS's ReceiveMessage as SQS does it: one message goes to one of two concurrent
    receivers. moto checks a message's visibility and marks it received without a
    lock, so two server threads can hand out the same message (seen with two
    watchers on one queue under load). Here each receive looks and marks under one
    lock, and a long poll waits outside it."""

    def atomic_receive(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        end = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            with lock:
                result = receive(self, queue_name, count, 0, *args, **kwargs)
            remaining = end - time.monotonic()
            if result or remaining <= 0:
                return result
            self.get_queue(queue_name).wait_for_messages(min(remaining, 1.0))

    return atomic_receive


def _atomic_delete(delete: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    """moto deletes a message by rebuilding the queue's list: two deletes at once (a
    fleet watcher's deleters run side by side) lose one, and its message comes back."""

    def atomic_delete(self: Any, receipt_handle: str) -> None:
        with lock:
            delete(self, receipt_handle)

    return atomic_delete


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing boto3 (in this process and in children) at moto."""
    env = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def spotwatch_cmd() -> list[str]:
    """argv prefix that runs this checkout's spotwatch in this interpreter."""
    return [sys.executable, "-m", "spotwatch"]


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-file spotwatch (.pyz): SPOTWATCH_TEST_PYZ if set (CI builds it first),
    else built from this checkout by tools/build-pyz (needs the package index), once
    per run: xdist's workers share the directory above their own, and a lock."""
    import fcntl

    given = os.environ.get("SPOTWATCH_TEST_PYZ")
    if given:
        return Path(given)
    shared = tmp_path_factory.getbasetemp().parent
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        shared = tmp_path_factory.getbasetemp()
    out = shared / "pyz"
    with open(shared / "pyz.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = sorted(out.glob("spotwatch-*.pyz"))
        if built:
            return built[-1]
        build = REPO / "tools" / "build-pyz"
        result = subprocess.run(
            [sys.executable, str(build), "--out-dir", str(out)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"tools/build-pyz failed:\n{result.stderr[-3000:]}"
        return Path(result.stdout.strip().splitlines()[-1])
