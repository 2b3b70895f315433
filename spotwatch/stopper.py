"""Signals, gunicorn style: the handler only records; the loop acts between polls.

The handler assigns one attribute (no locks, no I/O), so it cannot deadlock
whatever the main thread was doing. ``signal.set_wakeup_fd`` makes the C-level
handler write a byte to a pipe, which wakes ``sleep`` (a ``select`` on that
pipe) at once; PEP 475 would otherwise resume a plain sleep after the handler.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterable
from types import FrameType


class Stopper:
    """Records a stop request (a signal, or ``request()``) and offers sleeps it interrupts.

    It quacks like a ``threading.Event`` (``is_set``, ``wait``, ``set``) so it can be
    handed to code that sleeps between retries.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self.signum: int | None = None
        self._requested = False
        self._closed = False
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd: int | None = None

    def install(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Route ``signals`` here. Only from the main thread."""
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None

    def close(self) -> None:
        self._closed = True
        self.uninstall()
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self._requested = True

    # The threading.Event-like surface.
    def is_set(self) -> bool:
        return self._requested

    def set(self) -> None:
        """Request a stop from code (tests, the drill); wakes a sleeping loop."""
        self._requested = True
        try:
            os.write(self._write_fd, b"\0")
        except OSError:
            pass  # pipe full: a wake-up is already pending

    request = set

    def wake(self) -> None:
        """Cut a sleep short without asking for a stop: a source has news (any thread)."""
        if self._closed:
            return  # the fd number may belong to another file by now
        try:
            os.write(self._write_fd, b"\1")
        except OSError:
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on a stop request."""
        return self.sleep(timeout if timeout is not None else 3600.0)

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True (early) once a stop is requested."""
        if self._requested:
            return True
        if seconds > 0:
            try:
                select.select([self._read_fd], [], [], seconds)
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                pass
            self._drain()
        return self._requested

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, 512):
                pass
        except (BlockingIOError, OSError):
            pass
