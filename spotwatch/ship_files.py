"""Turn the PATH arguments of `spotwatch ship` into the regular files to ship.

A PATH is a file, a directory (walked recursively) or a glob (``*``, ``?``,
``[...]``, ``**``). A PATH named explicitly is followed if it is a symlink; inside
a walked directory symlinks are not followed (no loops, no file shipped twice
through ``current -> app.log``). Anything that is not a regular file (FIFO,
socket, device) is never opened: reading a FIFO would block the shipper.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from spotwatch.ship_plan import Candidate

_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Found:
    """What the PATH arguments amount to."""

    candidates: tuple[Candidate, ...]
    missing: tuple[str, ...]  # PATH arguments that name nothing
    unreadable: tuple[str, ...]  # directories that could not be listed
    ignored: tuple[str, ...]  # not regular files, or symlinks met while walking


def find_files(paths: Sequence[str]) -> Found:
    """Expand ``paths`` into regular files (absolute paths, each once, with its size)."""
    found: dict[str, Candidate] = {}
    missing: list[str] = []
    unreadable: list[str] = []
    ignored: list[str] = []

    def add(path: str, size: int) -> None:
        path = os.path.normpath(os.path.abspath(path))
        found.setdefault(path, Candidate(path=path, size=size))

    def explicit(path: str) -> bool:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return False
        except OSError:
            unreadable.append(os.path.abspath(path))
            return True
        if stat.S_ISDIR(info.st_mode):
            walk(path)
        elif stat.S_ISREG(info.st_mode):
            add(path, info.st_size)
        else:
            ignored.append(os.path.abspath(path))
        return True

    def walk(top: str) -> None:
        def on_error(error: OSError) -> None:
            unreadable.append(os.path.abspath(error.filename or top))

        for dirpath, dirnames, filenames in os.walk(top, onerror=on_error):
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    ignored.append(os.path.abspath(full))
            for name in filenames:
                full = os.path.join(dirpath, name)
                try:
                    info = os.lstat(full)
                except OSError:
                    continue  # gone since the listing: nothing to ship
                if stat.S_ISREG(info.st_mode):
                    add(full, info.st_size)
                else:
                    ignored.append(os.path.abspath(full))

    for arg in paths:
        if os.path.lexists(arg):
            if not explicit(arg):
                missing.append(arg)  # a dangling symlink
        elif _MAGIC.search(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            hits = [m for m in matches if explicit(m)]
            if not hits:
                missing.append(arg)
        else:
            missing.append(arg)

    return Found(
        candidates=tuple(found.values()),
        missing=tuple(missing),
        unreadable=tuple(dict.fromkeys(unreadable)),
        ignored=tuple(dict.fromkeys(ignored)),
    )
