"""Replace a file in one rename: readers and crashes see the old content or the new.

The new content goes to a temp file in the same directory (``.NAME.XXXXXXXX.tmp``,
created exclusively under a random name, so a symlink planted in a directory
others can write to is never followed), then ``os.replace`` puts it in place.
Used by the installer (/etc files), the one-file install, the hooks journal
and the metrics file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, payload: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``payload`` (file mode ``mode``, not subject to the umask).

    ``durable`` adds the fsyncs (file, then directory) that make the new content
    survive a power loss, not just a crash of spotwatch.
    """
    directory = path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def is_temp_of(name: str, path: Path) -> bool:
    """Whether ``name`` (in ``path``'s directory) is a temp file of ``path``'s writes."""
    return name.startswith(f".{path.name}.") and name.endswith(".tmp")


def remove_stale_temps(path: Path) -> None:
    """Remove the temp files a crash between write and rename left beside ``path``."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if is_temp_of(name, path):
            try:
                os.unlink(path.parent / name)
            except OSError:
                pass
