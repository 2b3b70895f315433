"""Helpers for tests of the one-file spotwatch."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path


def with_build_id(pyz: Path, dest: Path, build_id: str) -> Path:
    """A copy of ``pyz`` that shiv takes for another build (an upgrade, without a rebuild)."""
    with open(pyz, "rb") as head:
        shebang = head.readline()
    # As zipapp writes one: the shebang line, then the zip, in one stream.
    with open(dest, "wb") as raw:
        raw.write(shebang)
        with zipfile.ZipFile(pyz) as src, zipfile.ZipFile(raw, "w") as out:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "environment.json":
                    env = json.loads(data)
                    env["build_id"] = build_id
                    data = json.dumps(env).encode()
                out.writestr(info, data)
    dest.chmod(0o755)
    return dest
