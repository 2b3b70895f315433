"""A metadata value kept fresh by a background thread, read without blocking.

Google's hanging GETs and Azure's slow first answer both block for long spells;
the watch loop must not (it pings the systemd watchdog and answers SIGTERM at
once). So a ``Feed`` thread does the blocking reads, and the monitors' ``check``
only looks at what it last got. When the value changes the feed calls ``wake``,
which cuts the watch loop's sleep short: detection is then as fast as the
metadata server tells us, not one interval later.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Generic, TypeVar

from spotwatch.clouds.metadata_http import ImdsError
from spotwatch.logs import get_logger
from spotwatch.monitor import MonitorBase

T = TypeVar("T")

# After a failed read, wait this long (doubling up to MAX_BACKOFF) before the next.
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 2.0


class Feed(Generic[T]):
    """Calls ``step`` over and over on its own thread.

    ``step`` returns (value, seconds to pause before the next step) or raises
    ImdsError. ``snapshot`` gives the latest value, the fault of the latest step
    (None once a step succeeds again), and when the value last changed. ``wake``
    is called when the value changes and when a fault begins.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], tuple[T, float]],
        *,
        wake: Callable[[], None] = lambda: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._step = step
        self._wake = wake
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._value: T | None = None
        self._have_value = False
        self._changed_at: float | None = None
        self._error: ImdsError | None = None
        self._news = False
        self._thread: threading.Thread | None = None
        self._log = get_logger(feed=name)

    def start(self) -> Feed[T]:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=f"feed:{self.name}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> tuple[T | None, ImdsError | None, float | None]:
        """(latest value or None before the first, fault of the last step, when it changed)."""
        with self._lock:
            self._news = False
            return self._value, self._error, self._changed_at

    def has_news(self) -> bool:
        """Whether the value changed, or a fault began, since the last snapshot."""
        with self._lock:
            return self._news

    def _failed(self, err: ImdsError, *, first: bool) -> None:
        with self._lock:
            self._error = err
            if first:
                self._news = True
        if first:
            # The first failure after a success is news: the watch loop looks now, so
            # the fault is logged even if the next step succeeds before its next poll
            # (a drip that ends with the value changing). Repeats wake nobody.
            self._wake()

    def _run(self) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                value, pause = self._step()
            except ImdsError as err:
                failures += 1
                self._failed(err, first=failures == 1)
                pause = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (failures - 1))
            except Exception as err:  # a bug must not silently end the feed
                failures += 1
                self._log.error("feed.step_failed", error=repr(err))
                self._failed(
                    ImdsError("bad-body", repr(err), "report this as a bug"), first=failures == 1
                )
                pause = MAX_BACKOFF
            else:
                failures = 0
                changed = False
                with self._lock:
                    self._error = None
                    if not self._have_value or value != self._value:
                        changed = True
                        self._value = value
                        self._have_value = True
                        self._changed_at = self._wall()
                        self._news = True
                if changed:
                    self._wake()
            if pause > 0:
                self._closed.wait(pause)


class FeedMonitor(MonitorBase, Generic[T]):
    """The base of a monitor over a feed (Google's values, Azure's events): its news
    and its closing are the feed's, and ``latest`` never blocks."""

    def __init__(self, name: str, feed: Feed[T]) -> None:
        self.name = name
        self._feed = feed

    def start(self) -> None:
        self._feed.start()

    def latest(self) -> tuple[T | None, ImdsError | None, float | None]:
        """The feed's snapshot; its thread is started again if it ended."""
        if not self._feed.alive:
            self._feed.start()
        return self._feed.snapshot()

    def has_news(self) -> bool:
        return self._feed.has_news()

    def close(self) -> None:
        self._feed.close()
