"""The state directory: made safely, checked with the right fix, and locked.

One daemon per state directory: an exclusive ``flock`` held for the daemon's life.

Two daemons on one journal would both run every hook. ``STATE_DIR/spotwatch.lock``
holds the holder's PID (for the message the second one prints); the lock itself
is the kernel's, so it goes away with the process however it ends (SIGKILL, a
crash), and a stale PID in the file never blocks a start.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from spotwatch.errors import UsageError

LOCK_NAME = "spotwatch.lock"
PARENT_MODE = 0o755  # missing parents: never group- or world-writable, whatever the umask
STATE_MODE = 0o700


def make(state_dir: Path) -> None:
    """Create ``state_dir`` (0700) and its missing parents (0755); OSError if we cannot.

    ``Path.mkdir(parents=True)`` would make the parents 0777 less the umask: 0777
    under umask 000."""
    missing: list[Path] = []
    path = Path(state_dir)
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for index, directory in enumerate(reversed(missing)):
        last = index == len(missing) - 1
        try:
            os.mkdir(directory, STATE_MODE if last else PARENT_MODE)
        except FileExistsError:
            continue


def unusable(state_dir: Path) -> str | None:
    """Why the journal cannot be written in ``state_dir`` and what to do; None if it can."""
    if not state_dir.is_dir():
        return f"state directory {state_dir} is not a directory; use --state-dir to pick another"
    try:
        read_only = bool(os.statvfs(state_dir).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return (
            f"state directory {state_dir} is on a read-only file system: mount it "
            "read-write, or use --state-dir / SPOTWATCH_STATE_DIR to pick a writable one"
        )
    if not os.access(state_dir, os.W_OK | os.X_OK):
        st = state_dir.stat()
        return (
            f"state directory {state_dir} is not writable by uid {os.geteuid()} "
            f"(owner uid {st.st_uid}, mode {st.st_mode & 0o7777:04o}): fix its owner or "
            "mode, or use --state-dir / SPOTWATCH_STATE_DIR"
        )
    return None


class StateLock:
    """The held lock; ``release`` (or process exit) gives it back."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def acquire(state_dir: Path) -> StateLock:
    """Take the state directory's lock, or raise UsageError naming the holder's PID."""
    path = Path(state_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot open the lock file {path}: {exc.strerror or exc}; "
            "use --state-dir / SPOTWATCH_STATE_DIR to pick a writable directory"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f"PID {holder}" if holder else "another process"
        raise UsageError(
            f"another spotwatch ({who}) is already running with state directory "
            f"{state_dir}: stop it first, or give this one its own --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateLock(path, fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
