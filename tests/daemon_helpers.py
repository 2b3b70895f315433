"""Run ``spotwatch run`` as a real subprocess and read its JSON log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


class Daemon:
    """``spotwatch run`` in a subprocess, its stderr (JSON log lines) in a file."""

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
        # The simulators here speak AWS unless a test says otherwise: no cloud probing.
        full_env.setdefault("SPOTWATCH_CLOUD", "aws")
        full_env.update(env or {})
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

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log_file.close()


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
