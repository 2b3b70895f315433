"""spotwatch/atomicfile.py: the one way spotwatch replaces a file (the journal's crash
test is in test_journal.py; the installer's and metrics' in their own tests)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spotwatch.atomicfile import is_temp_of, remove_stale_temps, write_atomically


@pytest.mark.parametrize("durable", [True, False])
def test_write_replaces_with_the_mode_and_leaves_no_temp(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    old = os.umask(0o077)
    try:
        write_atomically(path, b"new", 0o644, durable=durable)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes", 0o600)  # type: ignore[arg-type]
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_stale_temps_of_that_file_only_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    names = [".journal.json.abc.tmp", ".journal.json.x", ".other.abc.tmp", "journal.json"]
    for name in names:
        (tmp_path / name).write_text("")
    assert [is_temp_of(n, path) for n in names] == [True, False, False, False]
    remove_stale_temps(path)
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])
