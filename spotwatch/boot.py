"""What spotwatch remembers across boots: how the last boot ended, and the end to come back from.

``STATE_DIR/boot.json`` (mode 0600, written atomically) holds this boot's id
(``/proc/sys/kernel/random/boot_id``, with pid 1's start time: see ``boot_key``),
the instance id once read, the last
notice that ended the instance and ran its hooks, and, once a system shutdown
began, how its run went (``running``, then ``done`` or ``cut-short`` with the
hooks left). On the next start a different boot id means a new boot: spotwatch
logs ``boot.previous_end`` once (see ``describe_previous``) and the watcher may
run the resume hooks for the end it handled before (same instance id).

The state directory lives on the instance's root volume, which survives a stop,
hibernate or reboot and is gone with a terminate: the record never outlives
its instance, save on an image made from the volume (then the instance ids
differ, and nothing resumes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spotwatch.atomicfile import write_atomically
from spotwatch.logs import get_logger
from spotwatch.notice import Notice

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
INIT_STAT_PATH = Path("/proc/1/stat")
BOOT_NAME = "boot.json"

# How the previous boot ended (boot.previous_end's "end").
SHUT_DOWN = "shut-down"  # a system shutdown, its run done
CUT_SHORT = "cut-short"  # a system shutdown whose hooks did not all finish
NO_SHUTDOWN_RUN = "no-shutdown-run"  # power lost, a hard stop, or spotwatch not running


@dataclass(frozen=True)
class PreviousBoot:
    """What the record of the previous boot says (only on a new boot)."""

    boot_id: str
    instance_id: str | None
    last_end: Notice | None  # the end that ran hooks in that boot, if any
    shutdown: Mapping[str, Any] | None  # the shutdown run's record, if one began


def read_boot_id(path: Path = BOOT_ID_PATH) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def init_started(stat: Path = INIT_STAT_PATH) -> str | None:
    """When pid 1 started (clock ticks after the kernel booted; /proc/1/stat field 22)."""
    try:
        text = stat.read_text()
        return text[text.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def boot_key(boot_id_path: Path = BOOT_ID_PATH, init_stat: Path = INIT_STAT_PATH) -> str:
    """What tells this boot from the last: the kernel's boot id, and when pid 1 started.
    The second matters in a container: there a unit sandboxed with
    ProtectKernelTunables= sees the host's boot id, the same at every container boot."""
    parts = [read_boot_id(boot_id_path) or "unknown", init_started(init_stat) or "?"]
    return ":".join(parts)


def notice_record(notice: Notice) -> dict[str, Any]:
    return {
        "kind": notice.kind,
        "action": notice.action,
        "raw_time": notice.raw_time,
        "deadline": notice.deadline,
        "id": notice.id,
        "source": notice.source,
        "env": [list(pair) for pair in notice.env],
    }


def notice_from(record: Any) -> Notice | None:
    try:
        return Notice(
            kind=str(record["kind"]),
            action=str(record["action"]),
            raw_time=str(record.get("raw_time", "")),
            time=None,
            deadline=float(record["deadline"]),
            id=str(record["id"]),
            source=str(record.get("source", "")),
            env=tuple((str(k), str(v)) for k, v in record.get("env", ())),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def describe_previous(
    previous: PreviousBoot, finished: Callable[[str], Sequence[str]]
) -> dict[str, Any]:
    """Pure: boot.previous_end's fields. ``finished(notice_id)``: its hooks that finished."""
    shutdown = previous.shutdown
    if not shutdown:
        return {
            "end": NO_SHUTDOWN_RUN,
            "note": "the previous boot ended with no shutdown run: power lost, a hard stop "
            "(or spotwatch was not running)",
        }
    fields: dict[str, Any] = {
        "shutdown": shutdown.get("kind"),
        "notice_id": shutdown.get("notice_id"),
    }
    state = shutdown.get("state")
    if state == "done":
        return {**fields, "end": SHUT_DOWN, "note": "shut down with the hooks done"}
    planned = [str(h) for h in shutdown.get("hooks", ())]
    notice_id = shutdown.get("notice_id")
    done = set(finished(notice_id)) if isinstance(notice_id, str) else set()
    left = shutdown.get("left")
    if not isinstance(left, list):
        left = [h for h in planned if h not in done]
    return {
        **fields,
        "end": CUT_SHORT,
        "hooks_finished": [h for h in planned if h in done],
        "hooks_left": left,
        "note": "the shutdown came before the hooks were done"
        if state == "cut-short"
        else "spotwatch was killed during the shutdown run (TimeoutStopSec, or power lost)",
    }


class BootRecord:
    """boot.json for this boot: read the previous one at start, then keep it current.

    A write that fails is logged once; it never stops the hooks."""

    def __init__(
        self,
        state_dir: Path,
        *,
        boot_id_path: Path = BOOT_ID_PATH,
        init_stat: Path = INIT_STAT_PATH,
        wall_clock: Callable[[], float] = time.time,
        log: Any = None,
    ) -> None:
        self.path = Path(state_dir) / BOOT_NAME
        self._wall = wall_clock
        self._log = log if log is not None else get_logger()
        self._write_failed = False
        self.boot_id = boot_key(boot_id_path, init_stat)
        old = self._load()
        self.previous: PreviousBoot | None = None
        if old is not None and old.get("boot_id") not in (None, self.boot_id):
            self.previous = PreviousBoot(
                boot_id=str(old.get("boot_id")),
                instance_id=old.get("instance_id")
                if isinstance(old.get("instance_id"), str)
                else None,
                last_end=notice_from(old["last_end"]) if old.get("last_end") else None,
                shutdown=old.get("shutdown") if isinstance(old.get("shutdown"), dict) else None,
            )
        if old is not None and self.previous is None:
            # The same boot (spotwatch restarted): keep what it knew.
            self._data = dict(old)
        else:
            self._data = {"boot_id": self.boot_id, "started_at": self._wall()}
        self._save()

    def log_previous_end(self, finished: Callable[[str], Sequence[str]]) -> None:
        """boot.previous_end, once per boot (only on the first start in a new boot)."""
        if self.previous is None:
            return
        fields = describe_previous(self.previous, finished)
        level = self._log.info if fields["end"] == SHUT_DOWN else self._log.warning
        level("boot.previous_end", previous_boot_id=self.previous.boot_id, **fields)

    # -- changes ---------------------------------------------------------------------

    def identity(self, instance_id: str) -> None:
        if instance_id != "unknown" and self._data.get("instance_id") != instance_id:
            self._data["instance_id"] = instance_id
            self._save()

    def end_handled(self, notice: Notice) -> None:
        """``notice`` ended the instance and its hooks ran: come back from it on a new boot."""
        self._data["last_end"] = notice_record(notice)
        self._save()

    def resumed(self) -> None:
        """The way back from the previous boot's end is done (or not wanted)."""
        self.previous = None

    def shutdown_began(self, kind: str, notice_id: str | None, hooks: Sequence[str]) -> None:
        self._data["shutdown"] = {
            "kind": kind,
            "notice_id": notice_id,
            "hooks": list(hooks),
            "state": "running",
            "at": self._wall(),
        }
        self._save()

    def shutdown_ended(self, left: Sequence[str]) -> None:
        record = self._data.get("shutdown")
        if not isinstance(record, dict):
            return
        record["state"] = "cut-short" if left else "done"
        record["left"] = list(left)
        self._save()

    # -- storage ---------------------------------------------------------------------

    def _load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._log.warning("boot.record_unreadable", path=str(self.path), error=str(exc))
            return None
        return data if isinstance(data, dict) else None

    def _save(self) -> None:
        payload = json.dumps(self._data, indent=1).encode() + b"\n"
        try:
            write_atomically(self.path, payload)
        except OSError as exc:
            if not self._write_failed:
                self._log.error("boot.write_failed", path=str(self.path),
                                error=exc.strerror or str(exc))  # fmt: skip
            self._write_failed = True
