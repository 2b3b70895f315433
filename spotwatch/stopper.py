"""The one way to stop: signals, gunicorn style; the handler only records, the loop acts.

Every loop that can be told to stop takes a :class:`StopFlag`: ``is_set`` to
check between steps, ``wait`` to sleep in a way a stop request cuts short. A
:class:`Stopper` is the real one (signals and ``set`` from code); a
``threading.Event`` is one too (worker threads, tests).

The handler assigns two attributes (no locks, no I/O), so it cannot deadlock
whatever the main thread was doing. ``signal.set_wakeup_fd`` makes the C-level
handler write a byte to a pipe, which wakes ``wait`` (a ``select`` on that
pipe) at once; PEP 475 would otherwise resume a plain sleep after the handler.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Protocol

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Recorded and counted, not a stop: the loop logs them (spotwatch.signal_notes).
NOTED_SIGNALS = (signal.SIGHUP,)


class StopFlag(Protocol):
    """What a loop that can be told to stop needs: a ``Stopper`` or ``threading.Event``."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, less once a stop is requested; True then."""
        ...


class Stopper:
    """Records a stop request (a signal, or ``set()``) and offers waits it interrupts.

    It quacks like a ``threading.Event`` (``is_set``, ``wait``, ``set``) so it can be
    handed to code that sleeps between retries. ``wake`` cuts a wait short without
    asking for a stop (a source has news). As a context manager it routes
    SIGTERM and SIGINT here for the ``with`` block.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self.signum: int | None = None
        self.signals = 0  # stop signals received: a second one in a shutdown stops all
        self._requested = False
        self._closed = False
        self._fds_lock = threading.Lock()  # no write to an fd number close() gave back
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd: int | None = None
        self.hangups = 0  # SIGHUPs received, once install_noted() routes them here

    def install(self, signals: Iterable[int] = STOP_SIGNALS) -> None:
        """Route ``signals`` here. Only from the main thread (Python's rule for handlers)."""
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def install_noted(self, signals: Iterable[int] = NOTED_SIGNALS) -> None:
        """Count ``signals`` (SIGHUP) in ``hangups`` instead of their default action
        (which for SIGHUP is to die); they wake a wait like any handled signal."""
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._count)

    def _count(self, signum: int, frame: FrameType | None) -> None:
        self.hangups += 1

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None

    def close(self) -> None:
        self.uninstall()
        with self._fds_lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._read_fd, self._write_fd):
                os.close(fd)

    def __enter__(self) -> Stopper:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.signals += 1
        self._requested = True

    def is_set(self) -> bool:
        return self._requested

    def set(self) -> None:
        """Request a stop from code (tests, the drill, another thread); wakes a waiting loop."""
        self._requested = True
        self._poke(b"\0")

    def wake(self) -> None:
        """Cut a wait short without asking for a stop: a source has news (any thread)."""
        self._poke(b"\1")

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds (None: until woken); True once a stop is requested.

        Returns early, False, after a ``wake``.
        """
        if self._requested:
            return True
        if timeout is None or timeout > 0:
            try:
                select.select([self._read_fd], [], [], timeout)
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                pass
            self._drain()
        return self._requested

    def _poke(self, byte: bytes) -> None:
        with self._fds_lock:  # never from the signal handler: that one only assigns
            if self._closed:
                return  # the fd number may belong to another file by now
            try:
                os.write(self._write_fd, byte)
            except OSError:
                pass  # pipe full: a wake-up is already pending

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, 512):
                pass
        except (BlockingIOError, OSError):
            pass
