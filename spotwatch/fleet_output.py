"""What ``spotwatch fleet watch`` writes: on stdout, a line (or a JSON record) per event
and, on a terminal, a status line now and then. One line at a time from many
workers, under a lock of its own, so a slow reader of stdout does not hold up the
book-keeping; a failed write is logged once and never stops the watcher. And the
event file each hook run reads (``SPOTWATCH_EVENT_FILE``)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from spotwatch.fleet_events import FleetEvent, event_line, event_record


class EventOutput:
    def __init__(self, out: TextIO, *, json_output: bool, log: Any) -> None:
        self._out = out
        self._json = json_output
        self._log = log
        self._lock = threading.Lock()
        self._failed = False

    def is_terminal(self) -> bool:
        try:
            return self._out.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    def event(self, event: FleetEvent, tags: Mapping[str, str]) -> None:
        if self._json:
            self.line(json.dumps(event_record(event, tags), sort_keys=False))
        else:
            self.line(event_line(event, tags))

    def line(self, line: str) -> None:
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (OSError, ValueError) as exc:
                if self._failed:
                    return
                self._failed = True
                error = str(exc)
            else:
                return
        self._log.warning("fleet.print_failed", error=error,
                          note="events are still acted on; see the log")


def write_event_file(workdir: Path, event: FleetEvent) -> Path:
    """The event's body as ``SPOTWATCH_EVENT_FILE`` for its hooks; raises OSError."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", event.event_id)[:100] or "event"
    path = workdir / f"{name}.json"
    # Recreated if a /tmp cleaner removed it during a quiet week.
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(event.body, encoding="utf-8")
    return path


def remove_event_file(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
