"""The test suite's shared helpers, imported by name (``from tests.helpers import ...``):
polling for a condition, a hooks directory, hook scripts that record what they saw,
and ``spotwatch run`` as a real subprocess with its JSON log lines.

A fixture here is named ``<name>_fixture`` in Python and ``<name>`` to pytest, and a
test module imports it as an explicit re-export, on a line of its own:
``from tests.helpers import hooks_dir_fixture as hooks_dir_fixture``. pytest finds
it there; the test's ``hooks_dir`` parameter does not shadow the import (a
"redefinition" to linters), and ruff does not call the import unused.

conftest.py keeps only what every test gets without asking (a fresh structlog)
and the session-wide servers (moto, the one-file build).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest

from spotwatch.imdssim import ImdsSimulator

REPO = Path(__file__).resolve().parent.parent


class WaitTimeout(AssertionError):
    """A condition polled by ``wait_until`` did not come true in time."""


def wait_until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``condition`` until it is truthy and return its value; fail naming ``what``
    after ``timeout`` s. ``condition`` may raise to fail at once (a process that died)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- hooks directories and hooks -----------------------------------------------------


def make_hooks_dir(parent: Path, name: str = "hooks.d") -> Path:
    """An empty hooks directory as spotwatch accepts it: 0755, whatever the umask."""
    directory = parent / name
    directory.mkdir()
    directory.chmod(0o755)  # mkdir's mode is masked by the umask; the check is not
    return directory


@pytest.fixture(name="hooks_dir")
def hooks_dir_fixture(tmp_path: Path) -> Path:
    """An empty hooks directory in the test's temp dir."""
    return make_hooks_dir(tmp_path)


@pytest.fixture(name="sim")
def sim_fixture() -> Iterator[ImdsSimulator]:
    """The EC2 IMDS simulator on 127.0.0.1, IMDSv2 tokens required, as EC2 does by default."""
    with ImdsSimulator(require_token=True) as simulator:
        yield simulator


# -- spotwatch run as a subprocess ------------------------------------------------------


class Daemon:
    """``spotwatch run`` in a subprocess, its stderr (JSON log lines) in a file.

    ``profile_imports`` runs it with PYTHONPROFILEIMPORTTIME, so ``imported()``
    can tell which modules it has imported so far."""

    def __init__(
        self,
        imds_url: str,
        hooks_dir: Path,
        state_dir: Path,
        log_path: Path,
        *,
        interval: float | None = 1.0,  # None: spotwatch's own default
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        profile_imports: bool = False,
    ) -> None:
        self.log_path = log_path
        argv = [
            sys.executable, "-m", "spotwatch", "run",
            "--imds-url", imds_url,
            *(["--interval", str(interval)] if interval is not None else []),
            "--hooks-dir", str(hooks_dir),
            "--state-dir", str(state_dir),
            "--log-format", "json",
            *extra,
        ]  # fmt: skip
        full_env = dict(os.environ)
        full_env.pop("NOTIFY_SOCKET", None)
        # Outside systemd, as a test is: a SIGTERM is an operator's stop (a test that
        # rehearses a system shutdown sets it, with a systemctl of its own on PATH).
        full_env.pop("INVOCATION_ID", None)
        # The simulators here speak AWS unless a test says otherwise: no cloud probing.
        full_env.setdefault("SPOTWATCH_CLOUD", "aws")
        full_env.update(env or {})
        if profile_imports:
            full_env["PYTHONPROFILEIMPORTTIME"] = "1"
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            env=full_env,
        )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_for_event(
        self, name: str, timeout: float = 15.0, count: int = 1
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            events = self.events(name)
            if len(events) >= count:
                return events
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) before {name}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            return None

        return wait_until(found, timeout, f"{count} x {name} in {self.log_path}")  # type: ignore[no-any-return]

    def imported(self) -> list[str]:
        """Modules imported so far, in order (needs ``profile_imports=True``)."""
        return [
            line.rsplit("|", 1)[-1].strip()
            for line in self.log_path.read_text(errors="replace").splitlines()
            if line.startswith("import time:")
        ]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def signal_delivered(self, signum: int) -> bool:
        """True once ``signum`` is no longer pending for the process: the kernel has
        run its handler (Python's C-level one, which wakes the main thread). Also
        true once the process is gone, so a caller's next check sees that."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return True
        bit = 1 << (signum - 1)
        pending = 0
        for line in status.splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")):
                pending |= int(line.split()[1], 16)
        return not pending & bit

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log_file.close()


class Daemons:
    """The ``spotwatch run`` processes a test started; all killed when it ends.

    Each gets its own log (``daemon0.log``, ``daemon1.log``, ...) and they share one
    state directory, as restarts of one daemon on one machine do."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._started: list[Daemon] = []

    def start(
        self,
        imds_url: str,
        hooks_dir: Path,
        *extra: str,
        interval: float | None = 1.0,
        env: Mapping[str, str] | None = None,
        profile_imports: bool = False,
    ) -> Daemon:
        """``spotwatch run --imds-url URL --hooks-dir DIR *extra``, started (not waited on)."""
        daemon = Daemon(
            imds_url,
            hooks_dir,
            self._tmp_path / "state",
            self._tmp_path / f"daemon{len(self._started)}.log",
            interval=interval,
            extra=extra,
            env=env,
            profile_imports=profile_imports,
        )
        self._started.append(daemon)
        return daemon

    def stop_all(self) -> None:
        for daemon in self._started:
            daemon.stop()


@pytest.fixture(name="daemons")
def daemons_fixture(tmp_path: Path) -> Iterator[Daemons]:
    """Start ``spotwatch run`` with ``daemons.start(...)``; none outlives the test."""
    started = Daemons(tmp_path)
    yield started
    started.stop_all()


# -- hooks that record what they saw --------------------------------------------------


def write_hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body.lstrip())
    path.chmod(mode)
    return path


RECORDING_HOOK = """
echo "$(basename "$0") start $(date +%s.%N)" >> "{record}"
env | grep '^SPOTWATCH_' | sed "s|^|$(basename "$0") env |" >> "{record}"
{extra}
echo "$(basename "$0") end $(date +%s.%N)" >> "{record}"
"""


def recording_hook(
    directory: Path, name: str, record: Path, extra: str = "", mode: int = 0o755
) -> Path:
    return write_hook(directory, name, RECORDING_HOOK.format(record=record, extra=extra), mode)


def read_record(record: Path) -> list[tuple[str, str, str]]:
    if not record.exists():
        return []
    rows = []
    for line in record.read_text().splitlines():
        hook, what, rest = [*line.split(" ", 2), "", ""][:3]
        rows.append((hook, what, rest))
    return rows


def starts(record: Path) -> list[str]:
    return [hook for hook, what, _ in read_record(record) if what == "start"]


def ends(record: Path) -> list[str]:
    return [hook for hook, what, _ in read_record(record) if what == "end"]


def hook_env(record: Path, hook: str) -> dict[str, str]:
    env = {}
    for h, what, rest in read_record(record):
        if h == hook and what == "env":
            key, _, value = rest.partition("=")
            env[key] = value
    return env
