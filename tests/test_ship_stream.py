"""Unit tests of the readers that ship a file as it was when its upload began."""

from __future__ import annotations

import gzip
import io
import os
import threading
from pathlib import Path

import pytest

from spotwatch.ship_files import find_files
from spotwatch.ship_stream import (
    BLOCK,
    CappedReader,
    FileShrankError,
    GzipReader,
    ShipCancelledError,
)

MiB = 1024 * 1024


def _lines(count: int, start: int = 0) -> bytes:
    return b"".join(b"line %08d some log text here\n" % i for i in range(start, start + count))


def test_capped_reader_stops_at_the_size_read_first_while_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(_lines(1000))
    with path.open("rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        reader = CappedReader(raw, size, threading.Event())
        with path.open("ab") as writer:
            writer.write(_lines(1000, 1000))
        assert reader.seek(0, 2) == size
        reader.seek(0)
        data = reader.read(size // 3) + reader.read()
    assert data == _lines(1000)
    assert reader.read(10) == b""


def test_capped_reader_refuses_a_torn_read_when_the_file_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(_lines(1000))
    with path.open("rb") as raw:
        reader = CappedReader(raw, os.fstat(raw.fileno()).st_size, threading.Event())
        os.truncate(path, 100)  # copytruncate rotation
        with pytest.raises(FileShrankError, match="shrank"):
            reader.read()


@pytest.mark.parametrize("fast", [True, False], ids=["isal-if-installed", "zlib"])
def test_gzip_reader_gives_exact_reads_and_a_prefix_of_a_growing_file(
    tmp_path: Path, fast: bool
) -> None:
    path = tmp_path / "app.log"
    original = os.urandom(3 * BLOCK + 12345)  # incompressible: output as big as input
    path.write_bytes(original)
    with path.open("rb") as raw:
        reader = GzipReader(raw, len(original), threading.Event(), level=1, fast=fast)
        with path.open("ab") as writer:
            writer.write(b"appended after the upload began\n" * 1000)
        chunks = []
        while True:
            chunk = reader.read(MiB)
            if not chunk:
                break
            chunks.append(chunk)
    # Every read but the last is exactly what was asked for (s3transfer's parts).
    assert all(len(c) == MiB for c in chunks[:-1])
    assert gzip.decompress(b"".join(chunks)) == original
    assert reader.bytes_in == len(original)
    assert reader.bytes_out == sum(len(c) for c in chunks)


def test_gzip_reader_holds_at_most_one_read_and_one_block(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(6 * BLOCK))
    with path.open("rb") as raw:
        reader = GzipReader(raw, 6 * BLOCK, threading.Event(), level=1)
        peak = 0
        while reader.read(256 * 1024):
            peak = max(peak, len(reader._pending))
    assert 0 < peak <= 256 * 1024 + BLOCK + 1024


def test_readers_give_up_when_the_upload_is_called_off(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(_lines(100_000))
    stop = threading.Event()
    with path.open("rb") as raw:
        reader = GzipReader(raw, path.stat().st_size, stop)
        reader.read(1000)
        stop.set()
        with pytest.raises(ShipCancelledError):
            reader.read(10 * MiB)
        with pytest.raises(ShipCancelledError):
            CappedReader(raw, 10, stop).read()


@pytest.mark.parametrize("fast", [True, False], ids=["isal-if-installed", "zlib"])
def test_gzip_of_text_and_of_an_empty_file_is_standard_gzip(fast: bool) -> None:
    text = _lines(50_000)
    reader = GzipReader(io.BytesIO(text), len(text), threading.Event(), level=3, fast=fast)
    packed = reader.read()
    assert len(packed) < len(text) / 3
    assert gzip.decompress(packed) == text
    empty = GzipReader(io.BytesIO(b""), 0, threading.Event(), fast=fast)
    assert gzip.decompress(empty.read()) == b""


# ---------------------------------------------------------------- finding files


def test_find_files_walks_directories_expands_globs_and_skips_what_is_not_a_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "app" / "sub").mkdir(parents=True)
    (tmp_path / "app" / "a.log").write_bytes(b"a" * 10)
    (tmp_path / "app" / "sub" / "b.log").write_bytes(b"b" * 20)
    (tmp_path / "app" / "link.log").symlink_to(tmp_path / "app" / "a.log")
    (tmp_path / "app" / "loop").symlink_to(tmp_path / "app")
    os.mkfifo(tmp_path / "app" / "pipe")
    (tmp_path / "other.log").write_bytes(b"o")
    found = find_files(
        [
            str(tmp_path / "app"),
            str(tmp_path / "*.log"),
            str(tmp_path / "app" / "a.log"),
            str(tmp_path / "nothing-*.log"),
            str(tmp_path / "absent"),
        ]
    )
    sizes = {c.path: c.size for c in found.candidates}
    assert sizes == {
        str(tmp_path / "app" / "a.log"): 10,
        str(tmp_path / "app" / "sub" / "b.log"): 20,
        str(tmp_path / "other.log"): 1,
    }
    assert found.missing == (str(tmp_path / "nothing-*.log"), str(tmp_path / "absent"))
    assert set(found.ignored) == {
        str(tmp_path / "app" / "link.log"),
        str(tmp_path / "app" / "loop"),
        str(tmp_path / "app" / "pipe"),
    }


def test_an_explicit_symlink_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.log").write_bytes(b"x" * 5)
    (tmp_path / "current.log").symlink_to(tmp_path / "real.log")
    found = find_files([str(tmp_path / "current.log")])
    assert [(c.path, c.size) for c in found.candidates] == [(str(tmp_path / "current.log"), 5)]
