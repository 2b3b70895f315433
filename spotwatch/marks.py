"""What the built-in actions already did, so a restart never does it again.

``STATE_DIR/actions.json`` (mode 0600) maps a key (the notice's journal key plus
the action and its destination) to when it was done and a small record. Every
change is written atomically under an exclusive lock on ``actions.lock``, so two
actions of one notice (a notify to two destinations, a deregister) never lose
each other's marks. The newest ``KEEP`` marks are kept.

Failure policy, as the hook journal's: a state directory that cannot be read or
written is reported (``MarksError``) and the caller goes on without the record:
better a message twice than none.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from spotwatch.atomicfile import write_atomically
from spotwatch.errors import SpotwatchError

FILE_NAME = "actions.json"
LOCK_NAME = "actions.lock"
KEEP = 500


class MarksError(SpotwatchError):
    """The state directory cannot hold the marks."""


class Marks:
    """A small persistent map of what was done; every change is durable at once."""

    def __init__(self, state_dir: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(state_dir)
        self.path = self.directory / FILE_NAME
        self._clock = clock

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise MarksError(f"cannot use the state directory {self.directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # A torn or foreign file: start afresh (the action runs again).
            return {}
        marks = data.get("marks") if isinstance(data, dict) else None
        return marks if isinstance(marks, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        with self._locked():
            found = self._load().get(key)
        return found if isinstance(found, dict) else None

    def put(self, key: str, record: dict[str, Any] | None = None) -> None:
        """Record ``key`` as done (with ``record``), durably."""
        with self._locked():
            marks = self._load()
            marks.pop(key, None)
            marks[key] = {"at": round(self._clock(), 3), **(record or {})}
            while len(marks) > KEEP:
                marks.pop(next(iter(marks)))
            payload = json.dumps({"version": 1, "marks": marks}, indent=1).encode()
            try:
                write_atomically(self.path, payload)
            except OSError as exc:
                raise MarksError(f"cannot write {self.path}: {exc}") from exc
