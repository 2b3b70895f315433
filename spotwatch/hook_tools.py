"""The tools a hook says it needs, and which of them this machine lacks.

A hook names the commands it runs (besides spotwatch and the basics every
system has) in one line near its top::

    # Tools: aws kubectl

``# Tools: none`` says it needs nothing more. ``spotwatch hooks`` looks each one
up on PATH, so a hook that would exit 127 at the worst moment is found today.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LABEL = "# Tools:"
HEAD_BYTES = 4096  # the header is at the top; never read a whole binary
_TOOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class ToolCheck:
    """What one hook needs (None: it does not say) and what is missing from PATH."""

    needs: tuple[str, ...] | None
    missing: tuple[str, ...] = ()


def declared(text: str) -> tuple[str, ...] | None:
    """The tools in ``text``'s ``# Tools:`` line (in its leading comment), or None (pure)."""
    for number, line in enumerate(text.splitlines()):
        if number == 0 and line.startswith("#!"):
            continue
        if not line.startswith("#"):
            return None
        if line.startswith(LABEL):
            words = line[len(LABEL):].replace(",", " ").split()
            return tuple(w for w in words if w != "none" and _TOOL.match(w))
    return None


def check(path: Path, environ: Mapping[str, str] = os.environ) -> ToolCheck:
    """Read ``path``'s header and look each tool up on ``environ``'s PATH."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return ToolCheck(None)
    needs = declared(head)
    if not needs:
        return ToolCheck(needs)
    search = environ.get("PATH", os.defpath)
    return ToolCheck(needs, tuple(t for t in needs if shutil.which(t, path=search) is None))
