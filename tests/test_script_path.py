"""Finding the installed spotwatch script (spotwatch/script_path.py), for the unit's
ExecStart= and the hooks' SPOTWATCH_BIN."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotwatch.errors import SpotwatchError
from spotwatch.script_path import find_spotwatch


def test_find_spotwatch_prefers_the_running_script(tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "spotwatch"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    other = tmp_path / "other"
    other.mkdir()
    assert find_spotwatch(str(script), "/usr/bin/python3", lambda n: None) == str(script)
    # Run as `python -m spotwatch`: the script beside the interpreter.
    found = find_spotwatch("/x/spotwatch/__main__.py", str(bin_dir / "python"), lambda n: None)
    assert found == str(script)
    # Neither: whatever is on PATH.
    assert find_spotwatch("-c", "/usr/bin/python3", lambda n: str(script)) == str(script)
    with pytest.raises(SpotwatchError, match="cannot find the installed 'spotwatch'"):
        find_spotwatch("-c", str(other / "python"), lambda n: None)
