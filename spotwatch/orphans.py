"""No second copy of a running hook: what a restart does about a hook the last run left.

Each hook runs in its own process group, so it outlives a daemon killed with
SIGKILL (or crashed). The journal records the running hook's group
(``group_record``): its id, the boot it ran in, and when it started. On a
restart, before any hook of that notice runs, ``settle`` looks for the group:

- gone (the usual case under systemd, which kills the whole cgroup): nothing to do;
- still alive, this boot, and a member's environment names the notice (so a
  reused process id is never mistaken for it): wait for it until its own time
  would have run out (start + hook timeout, never past the deadline less the
  margin); past that, SIGTERM the group, then SIGKILL after the grace.

Then the watcher decides: a hook whose orphan ended on its own runs again (its
exit status died with the old daemon, and hooks are idempotent); one that had
to be stopped at its time is recorded as timed out, as it would have been.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
POLL_SECONDS = 0.2

GONE = "gone"  # no such group (or not ours): nothing ran on
ENDED = "ended"  # it was running and ended on its own while we waited
KILLED = "killed"  # past its time: stopped with SIGTERM, then SIGKILL


@functools.cache
def boot_id(path: str = BOOT_ID_PATH) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def group_record(pgid: int, started_at: float) -> dict[str, Any]:
    """What the journal keeps about a running hook's process group."""
    return {"pgid": pgid, "boot_id": boot_id(), "started_at": started_at}


def members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group ``pgid``, from /proc."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def is_ours(pgid: int, notice_id: str) -> bool:
    """A live group whose members carry SPOTWATCH_NOTICE_ID=``notice_id`` (a member
    whose environment cannot be read counts as ours: better wait than run twice)."""
    needle = f"SPOTWATCH_NOTICE_ID={notice_id}".encode()
    pids = members(pgid)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    return True
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class Orphan:
    """A journal's record of a hook that was running when the last daemon ended."""

    notice_id: str
    hook: str
    pgid: int
    boot_id: str | None
    started_at: float

    @classmethod
    def of(cls, notice_id: str, hook: str, record: Any) -> Orphan | None:
        try:
            return cls(notice_id, hook, int(record["pgid"]), record.get("boot_id"),
                       float(record["started_at"]))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def settle(
    orphan: Orphan,
    until: float,
    *,
    kill_grace: float,
    log: Any,
    keep_alive: Callable[[], None] = lambda: None,
    stopping: Callable[[], bool] = lambda: False,
    wait: Callable[[float], object] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
) -> str:
    """Wait for the orphan group until ``until`` (wall clock), else stop it; GONE,
    ENDED or KILLED (or GONE at once when ``stopping``: the next start looks again).
    ``keep_alive`` runs between looks (the watchdog)."""
    if orphan.boot_id is not None and orphan.boot_id != boot_id():
        return GONE  # another boot: nothing of the old one runs
    if not members(orphan.pgid) or not is_ours(orphan.pgid, orphan.notice_id):
        return GONE
    log.warning(
        "hook.orphan_running",
        hook=orphan.hook,
        notice_id=orphan.notice_id,
        pgid=orphan.pgid,
        seconds=round(max(0.0, until - wall_clock()), 1),
        note="the hook the last spotwatch started still runs; waiting for it (at most "
        "until its own time runs out) before deciding whether to run it again",
    )
    while wall_clock() < until:
        if stopping():
            return GONE
        keep_alive()
        if not members(orphan.pgid):
            log.info("hook.orphan_ended", hook=orphan.hook, pgid=orphan.pgid)
            return ENDED
        wait(min(POLL_SECONDS, max(0.0, until - wall_clock())))
    if not members(orphan.pgid):
        return ENDED
    log.warning("hook.orphan_killed", hook=orphan.hook, pgid=orphan.pgid,
                action="SIGTERM to its process group, SIGKILL after the grace")  # fmt: skip
    _kill(orphan.pgid, signal.SIGTERM)
    grace_end = wall_clock() + kill_grace
    while wall_clock() < grace_end and members(orphan.pgid):
        keep_alive()
        wait(POLL_SECONDS)
    if members(orphan.pgid):
        _kill(orphan.pgid, signal.SIGKILL)
    return KILLED


def _kill(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
