"""The one-file install: put the running spotwatch-VERSION.pyz where the service runs it.

``sudo python3 spotwatch-VERSION.pyz install`` (a shiv zipapp made by
tools/build-pyz) needs no network: the file holds every dependency. It lays out

- ``/opt/spotwatch/spotwatch.pyz``: a copy of the file, replaced in one rename
  on upgrade;
- ``/opt/spotwatch/lib/``: its dependencies unpacked (shiv's SHIV_ROOT), one
  directory per build, unpacked here by install so the service never writes
  there (ProtectSystem= may make it read-only) and never looks for a home
  directory (HOME may be unset, ProtectHome= may hide it); other builds'
  directories go once the service runs the new one;
- ``/opt/spotwatch/bin/spotwatch``: what ExecStart= and the hooks run: sets
  SHIV_ROOT and runs the file with the python3 that ran install;
- ``/usr/local/bin/spotwatch``: a symlink to it, if nothing else is there.

Uninstall removes all of them (the directory is spotwatch's alone).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from spotwatch.atomicfile import write_atomically

CODE_DIR = "/opt/spotwatch"
PYZ_PATH = "/opt/spotwatch/spotwatch.pyz"
LIB_DIR = "/opt/spotwatch/lib"
WRAPPER_PATH = "/opt/spotwatch/bin/spotwatch"
LINK_PATH = "/usr/local/bin/spotwatch"
MARKER = "# Written by 'spotwatch install' from the one-file spotwatch (.pyz)."

Runner = Callable[[Sequence[str], "dict[str, str]"], int]


def running_pyz(argv0: str | None = None) -> Path | None:
    """The .pyz this spotwatch runs from, or None (installed with pip or pipx)."""
    path = Path(sys.argv[0] if argv0 is None else argv0)
    try:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            if "environment.json" not in archive.namelist():
                return None
    except OSError:
        return None
    return path.resolve()


def build_id(pyz: Path) -> str:
    """shiv's id of the build: the name of its directory under SHIV_ROOT ends with it."""
    with zipfile.ZipFile(pyz) as archive:
        return str(json.loads(archive.read("environment.json"))["build_id"])


def wrapper_text(python: str) -> str:
    return (
        "#!/bin/sh\n"
        f"{MARKER}\n"
        "# SHIV_ROOT: where install unpacked the file's dependencies, so running it\n"
        "# writes nothing and needs no home directory.\n"
        f"SHIV_ROOT={LIB_DIR}\n"
        "export SHIV_ROOT\n"
        f'exec {shlex.quote(python)} {PYZ_PATH} "$@"\n'
    )


def _run(argv: Sequence[str], env: dict[str, str]) -> int:
    return subprocess.run(list(argv), env=env, stdout=subprocess.DEVNULL, check=False).returncode


def place(
    root: Path,
    pyz: Path,
    *,
    python: str | None = None,
    out: Callable[[str], None] = print,
    run: Runner = _run,
) -> bool:
    """Copy ``pyz`` and unpack it under ``root``; returns whether the code changed."""
    python = python or sys.executable
    code = root / CODE_DIR.lstrip("/")
    dest = root / PYZ_PATH.lstrip("/")
    for sub in (code, code / "bin", code / "lib"):
        sub.mkdir(mode=0o755, parents=True, exist_ok=True)
    changed = not (dest.exists() and _same_file(pyz, dest))
    if changed:
        write_atomically(dest, pyz.read_bytes(), 0o644)
        out(f"installed {dest} (from {pyz})")
    wrapper = root / WRAPPER_PATH.lstrip("/")
    text = wrapper_text(python)
    if not wrapper.exists() or wrapper.read_text() != text:
        write_atomically(wrapper, text.encode(), 0o755)
        out(f"wrote {wrapper}")
    # Unpack now, as root, with the interpreter the service uses.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIV_")}
    env["SHIV_ROOT"] = str(root / LIB_DIR.lstrip("/"))
    status = run([python, str(dest), "--version"], env)
    if status != 0:
        from spotwatch.errors import SpotwatchError

        raise SpotwatchError(f"'{python} {dest} --version' failed (exit {status})")
    # Byte-compiled now: under the strict drop-in the service cannot write them.
    unpacked = root / LIB_DIR.lstrip("/") / f"{dest.name}_{build_id(dest)}"
    run([python, "-m", "compileall", "-q", "-j", "0", str(unpacked)], env)
    link = root / LINK_PATH.lstrip("/")
    if not os.path.lexists(link):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(WRAPPER_PATH)
        out(f"linked {link} -> {WRAPPER_PATH}")
    return changed


def prune(root: Path, keep: str, out: Callable[[str], None] = print) -> None:
    """Remove what other builds unpacked under lib/."""
    lib = root / LIB_DIR.lstrip("/")
    for entry in sorted(lib.iterdir()) if lib.is_dir() else []:
        if keep in entry.name:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
        out(f"removed {entry} (an older version)")


def remove(root: Path, out: Callable[[str], None] = print) -> bool:
    """Remove what place() put under ``root``; returns whether there was any."""
    code = root / CODE_DIR.lstrip("/")
    wrapper = root / WRAPPER_PATH.lstrip("/")
    try:
        ours = MARKER in wrapper.read_text()
    except OSError:
        ours = False
    link = root / LINK_PATH.lstrip("/")
    if link.is_symlink() and os.readlink(link) == WRAPPER_PATH:
        link.unlink()
        out(f"removed {link}")
    if not ours:
        return False
    shutil.rmtree(code)
    out(f"removed {code}/")
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
        return build_id(a) == build_id(b)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
