"""The one-file install's layout decisions, with a stand-in .pyz (no build, no unpacking).

The real file is tested in test_pyz.py (Pythons) and test_systemd_tier.py (systemd).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from spotwatch import onefile
from spotwatch.errors import SpotwatchError
from spotwatch.install import uninstall


def fake_pyz(path: Path, build_id: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("environment.json", json.dumps({"build_id": build_id}))
        archive.writestr("__main__.py", "")
    return path


class Unpacker:
    """Stands in for running the file: records the call, makes shiv's directory."""

    def __init__(self, status: int = 0) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.status = status

    def __call__(self, argv: Sequence[str], env: dict[str, str]) -> int:
        self.calls.append((list(argv), env))
        if argv[1:2] == ["-m"]:
            return 0  # compileall
        pyz = Path(argv[1])
        lib = Path(env["SHIV_ROOT"])
        (lib / f"{pyz.name}_{onefile.build_id(pyz)}" / "site-packages").mkdir(
            parents=True, exist_ok=True
        )
        return self.status


def test_running_pyz_knows_a_shiv_file_from_a_script(tmp_path: Path) -> None:
    pyz = fake_pyz(tmp_path / "spotwatch-1.pyz", "a" * 8)
    assert onefile.running_pyz(str(pyz)) == pyz.resolve()
    script = tmp_path / "spotwatch"
    script.write_text("#!/usr/bin/python3\n")
    assert onefile.running_pyz(str(script)) is None
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("x", "")
    assert onefile.running_pyz(str(other_zip)) is None
    assert onefile.running_pyz(str(tmp_path / "missing")) is None


def test_place_lays_out_the_code_and_unpacks_it_with_its_python(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pyz = fake_pyz(tmp_path / "spotwatch-1.pyz", "a" * 8)
    unpack = Unpacker()
    assert onefile.place(root, pyz, python="/usr/bin/python3", out=lambda _: None, run=unpack)
    assert (root / "opt/spotwatch/spotwatch.pyz").read_bytes() == pyz.read_bytes()
    wrapper = root / "opt/spotwatch/bin/spotwatch"
    assert wrapper.stat().st_mode & 0o777 == 0o755
    assert 'exec /usr/bin/python3 /opt/spotwatch/spotwatch.pyz "$@"' in wrapper.read_text()
    argv, env = unpack.calls[0]
    assert argv == ["/usr/bin/python3", str(root / "opt/spotwatch/spotwatch.pyz"), "--version"]
    assert env["SHIV_ROOT"] == str(root / "opt/spotwatch/lib")
    assert os.readlink(root / "usr/local/bin/spotwatch") == "/opt/spotwatch/bin/spotwatch"
    # The same file again: nothing changes.
    lines: list[str] = []
    assert not onefile.place(root, pyz, python="/usr/bin/python3", out=lines.append, run=unpack)
    assert lines == []


def test_place_leaves_another_spotwatch_in_usr_local_bin(tmp_path: Path) -> None:
    root = tmp_path / "root"
    mine = root / "usr/local/bin/spotwatch"
    mine.parent.mkdir(parents=True)
    mine.write_text("#!/bin/sh\n# pip's\n")
    onefile.place(root, fake_pyz(tmp_path / "s.pyz", "b" * 8), out=lambda _: None, run=Unpacker())
    assert mine.read_text() == "#!/bin/sh\n# pip's\n"
    onefile.remove(root, out=lambda _: None)
    assert mine.exists() and not (root / "opt/spotwatch").exists()


def test_a_file_that_does_not_run_is_one_clear_error(tmp_path: Path) -> None:
    pyz = fake_pyz(tmp_path / "s.pyz", "c" * 8)
    with pytest.raises(SpotwatchError, match="--version' failed"):
        onefile.place(tmp_path / "root", pyz, out=lambda _: None, run=Unpacker(status=1))


def test_prune_keeps_only_the_current_build(tmp_path: Path) -> None:
    root = tmp_path / "root"
    unpack = Unpacker()
    onefile.place(root, fake_pyz(tmp_path / "old.pyz", "1" * 8), out=lambda _: None, run=unpack)
    onefile.place(root, fake_pyz(tmp_path / "new.pyz", "2" * 8), out=lambda _: None, run=unpack)
    lib = root / "opt/spotwatch/lib"
    assert len(list(lib.iterdir())) == 2
    onefile.prune(root, "2" * 8, out=lambda _: None)
    assert [p.name for p in lib.iterdir()] == [f"spotwatch.pyz_{'2' * 8}"]


def test_remove_leaves_an_opt_spotwatch_it_did_not_write(tmp_path: Path) -> None:
    theirs = tmp_path / "opt/spotwatch/bin/spotwatch"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("#!/bin/sh\necho something else\n")
    assert not onefile.remove(tmp_path, out=lambda _: None)
    assert theirs.exists()


def test_uninstall_removes_the_hooks_journal_but_not_other_files_there(tmp_path: Path) -> None:
    state = tmp_path / "var/lib/spotwatch"
    state.mkdir(parents=True)
    (state / "journal.json").write_text("{}")
    (state / "my-notes").write_text("mine")
    lines: list[str] = []
    uninstall(tmp_path, out=lines.append)
    assert not (state / "journal.json").exists()
    assert (state / "my-notes").exists()
    assert f"removed {state / 'journal.json'}" in lines
