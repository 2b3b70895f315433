"""File-like readers that ship a log file as it was when its upload began.

Both stop at ``limit``, the size read (fstat) before the first byte: a file that
is still being appended to is shipped as that prefix, never past it, and a file
that shrinks under us (copytruncate) fails loudly instead of sending a torn
body. ``stop`` is an event the uploader sets at the deadline, so a reader in
the middle of compressing a large file gives up at the next block.
"""

from __future__ import annotations

import importlib
import zlib
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from spotwatch.stopper import StopFlag

BLOCK = 1024 * 1024  # source bytes read (and compressed) at a time

# zlib level -> ISA-L level (ISA-L has 0..3; its 1 is as fast as zlib gets and
# compresses logs about as well as zlib's 3).
_ISAL_LEVEL = (0, 1, 1, 1, 2, 2, 2, 3, 3, 3)


def gzip_compressor(level: int, fast: bool = True) -> Any:
    """A compressobj writing one gzip member (header, deflate, CRC32 and size trailer).

    With the optional ``isal`` package (Intel ISA-L) and ``fast``, the same gzip
    format several times faster: under a deadline the CPU is often what limits
    shipping. No name or mtime in the header: the same bytes give the same object.
    """
    level = min(max(level, 0), 9)
    if fast:
        try:
            isal_zlib = importlib.import_module("isal.isal_zlib")
        except ImportError:
            pass
        else:
            return isal_zlib.compressobj(_ISAL_LEVEL[level], isal_zlib.DEFLATED, 31)
    return zlib.compressobj(level, zlib.DEFLATED, 31)


class FileShrankError(OSError):
    """The file got shorter than the size captured when its upload began."""


class ShipCancelledError(Exception):
    """The upload was called off (deadline or signal) while its body was being read."""


def _read_exactly(raw: BinaryIO, amount: int, position: int, limit: int) -> bytes:
    data = raw.read(amount)
    if len(data) == amount:
        return data
    chunks = [data]
    got = len(data)
    while got < amount:
        more = raw.read(amount - got)
        if not more:
            raise FileShrankError(
                f"file shrank to {position + got} bytes while shipping its first {limit}"
            )
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


class CappedReader:
    """A seekable view of the first ``limit`` bytes of ``raw`` (uploaded as they are)."""

    def __init__(self, raw: BinaryIO, limit: int, stop: StopFlag) -> None:
        self._raw = raw
        self._limit = limit
        self._stop = stop
        self._pos = 0
        raw.seek(0)

    @property
    def bytes_out(self) -> int:
        return self._limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            target = offset
        elif whence == 1:
            target = self._pos + offset
        elif whence == 2:
            target = self._limit + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        self._pos = min(max(target, 0), self._limit)
        self._raw.seek(self._pos)
        return self._pos

    def read(self, amount: int | None = -1) -> bytes:
        if self._stop.is_set():
            raise ShipCancelledError("upload called off")
        remaining = self._limit - self._pos
        if amount is None or amount < 0 or amount > remaining:
            amount = remaining
        if amount == 0:
            return b""
        data = _read_exactly(self._raw, amount, self._pos, self._limit)
        self._pos += amount
        return data

    def close(self) -> None:
        # The uploader owns the file and closes it once the upload is done.
        pass


class GzipReader:
    """A non-seekable stream of the gzip of the first ``limit`` bytes of ``raw``.

    ``read(n)`` returns exactly ``n`` bytes until the end (s3transfer cuts its
    multipart parts from these reads, and a short part would be refused), and
    holds at most ``n`` plus one compressed block in memory.
    """

    def __init__(
        self, raw: BinaryIO, limit: int, stop: StopFlag, level: int = 3, fast: bool = True
    ) -> None:
        self._raw = raw
        self._limit = limit
        self._stop = stop
        self._consumed = 0
        self._produced = 0
        self._pending = bytearray()
        self._finished = False
        self._compressor = gzip_compressor(level, fast)
        raw.seek(0)

    @property
    def bytes_in(self) -> int:
        return self._consumed

    @property
    def bytes_out(self) -> int:
        return self._produced

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, amount: int | None = -1) -> bytes:
        if amount is None or amount < 0:
            while not self._finished:
                self._fill()
            return self._take(len(self._pending))
        while len(self._pending) < amount and not self._finished:
            self._fill()
        return self._take(min(amount, len(self._pending)))

    def _take(self, amount: int) -> bytes:
        data = bytes(self._pending[:amount])
        del self._pending[:amount]
        self._produced += len(data)
        return data

    def _fill(self) -> None:
        if self._stop.is_set():
            raise ShipCancelledError("upload called off")
        want = min(BLOCK, self._limit - self._consumed)
        if want == 0:
            self._pending += self._compressor.flush()
            self._finished = True
            return
        data = _read_exactly(self._raw, want, self._consumed, self._limit)
        self._consumed += want
        self._pending += self._compressor.compress(data)

    def close(self) -> None:
        pass
