"""Where the installed ``spotwatch`` script is: the installer writes it into the unit's
``ExecStart=``, and hooks get it as SPOTWATCH_BIN (systemd's PATH may not reach a
pipx or venv install).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from spotwatch.errors import SpotwatchError


def find_spotwatch(
    argv0: str | None = None,
    executable: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """Absolute path of the installed ``spotwatch`` script (for ExecStart= and SPOTWATCH_BIN)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    candidates = []
    if Path(argv0).name == "spotwatch":
        candidates.append(os.path.abspath(argv0))
    # Beside the interpreter: a venv's or pipx's bin directory.
    candidates.append(os.path.join(os.path.dirname(executable), "spotwatch"))
    found = which("spotwatch")
    if found:
        candidates.append(os.path.abspath(found))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SpotwatchError(
        "cannot find the installed 'spotwatch' script for the unit's ExecStart=: "
        "install spotwatch with pip or pipx first and run 'spotwatch install' from it"
    )
