"""The files spotwatch ships: systemd units, the settings file, the example hooks.

There is one copy of each, in the package (``spotwatch/data/``), laid out as an
operator meets them: ``systemd/`` (the units, the strict drop-in, the settings
file) and ``hooks.d/`` (the examples). Being package data, they reach every
kind of install unchanged: an editable install reads the repository's files, a
wheel and the one-file .pyz carry them. ``spotwatch install`` writes them and
``spotwatch install --print`` shows them.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.abc import Traversable

UNIT = "systemd/spotwatch.service"
STRICT = "systemd/spotwatch.service.d/strict.conf"
ENV = "systemd/spotwatch.env"
FLEET_UNIT = "systemd/spotwatch-fleet.service"
HOOKS = "hooks.d"
RESUME = "resume.d"


def _node(name: str) -> Traversable:
    node = resources.files("spotwatch") / "data"
    for part in name.split("/"):
        node = node / part
    return node


def read(name: str) -> bytes:
    """The shipped file ``name`` (one of the names above, relative to spotwatch/data)."""
    return _node(name).read_bytes()


def example_hooks(directory: str = HOOKS) -> dict[str, bytes]:
    """The example hooks of ``directory`` (hooks.d, or resume.d: the resume hooks), by name."""
    return {
        entry.name: entry.read_bytes()
        for entry in sorted(_node(directory).iterdir(), key=lambda e: e.name)
        if entry.is_file() and not entry.name.startswith(".")
    }


EXAMPLE_DIRS = ("hooks.d/examples", "resume.d/examples")


def examples() -> dict[str, bytes]:
    """The action and drain examples, by their path under spotwatch/data
    (``hooks.d/examples/NAME``, ``resume.d/examples/NAME``)."""
    out: dict[str, bytes] = {}
    for folder in EXAMPLE_DIRS:
        node = _node(folder)
        if not node.is_dir():
            continue
        for entry in sorted(node.iterdir(), key=lambda e: e.name):
            if entry.is_file() and not entry.name.startswith("."):
                out[f"{folder}/{entry.name}"] = entry.read_bytes()
    return out
