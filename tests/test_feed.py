"""Background feeds: their thread, their faults, and the watch loop they wake."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from spotwatch.feed import Feed
from spotwatch.imds import ImdsError
from spotwatch.monitor import MonitorBase
from spotwatch.notice import SPOT_INTERRUPTION, Identity, Notice
from spotwatch.runner import HookSettings
from spotwatch.stopper import Stopper
from spotwatch.watcher import HookWork, Watcher, WatcherLinks, WatchSettings, WatchSources
from tests.watch_helpers import (
    FakeClock,
    FakeHook,
    FakeJournal,
    FakeNotifier,
    FakePlan,
    FakeResult,
)


def _wait(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_feed_keeps_the_latest_value_and_fault_and_wakes_on_change() -> None:
    script: list[Any] = [1, 1, ImdsError("server-error", "503", "retry"), 2]
    woken: list[float] = []

    def step() -> tuple[int, float]:
        item = script.pop(0) if script else 2
        if isinstance(item, Exception):
            raise item
        return item, 0.01

    feed: Feed[int] = Feed("test", step, wake=lambda: woken.append(time.time()))
    feed.start()
    try:
        assert _wait(lambda: feed.snapshot()[0] == 2)
        value, error, changed_at = feed.snapshot()
        assert (value, error) == (2, None) and changed_at is not None
        assert len(woken) == 3  # 1, the fault's start, 2; the repeat wakes nobody
        assert not feed.has_news()
    finally:
        feed.close()


def test_feed_survives_a_bug_in_its_step() -> None:
    calls = []

    def step() -> tuple[int, float]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return 7, 0.01

    feed: Feed[int] = Feed("test", step)
    feed.start()
    try:
        assert _wait(lambda: feed.snapshot()[0] == 7, timeout=10)
        assert feed.alive
    finally:
        feed.close()


class NewsMonitor(MonitorBase):
    """A monitor whose news arrives from another thread, as from a feed."""

    name = SPOT_INTERRUPTION

    def __init__(self) -> None:
        self.notice: Notice | None = None
        self.news = False

    def check(self) -> Notice | None:
        self.news = False
        return self.notice

    def has_news(self) -> bool:
        return self.news


def test_news_cuts_the_loops_sleep_short() -> None:
    monitor = NewsMonitor()
    stop = Stopper()
    hook_at: list[float] = []
    hooks = (FakeHook("10-a", Path("/hooks/10-a")),)

    def runner(pending: list[Any], env: dict[str, str], **kw: Any) -> list[Any]:
        hook_at.append(time.monotonic())
        return [FakeResult(h.name) for h in pending]

    watcher = Watcher(
        WatchSettings(interval=60.0, hooks_dir=Path("/hooks"),
                      hooks=HookSettings(hook_timeout=5.0, deadline_margin=1.0), max_notices=1),
        sources=WatchSources(monitors=[monitor], read_identity=Identity,
                             fault_types=(ImdsError,)),
        hooks=HookWork(plan=lambda d: FakePlan(d, hooks), runner=runner,
                       hook_environment=lambda base, n, ident, drill=False: {},
                       journal=FakeJournal(), environ={}),
        links=WatcherLinks(stop=stop, notifier=FakeNotifier(FakeClock())),
    )  # fmt: skip
    thread = threading.Thread(target=watcher.run, daemon=True)
    try:
        thread.start()
        time.sleep(0.3)  # the first poll is done; the loop sleeps toward a tick 60 s away
        now = time.time()
        monitor.notice = Notice(SPOT_INTERRUPTION, "terminate", "", None, now + 30, "n1", "t")
        monitor.news = True
        woke_at = time.monotonic()
        stop.wake()
        thread.join(10)
        assert not thread.is_alive(), "the loop slept on: news did not wake it"
        assert hook_at and hook_at[0] - woke_at < 2.0
    finally:
        stop.set()
        thread.join(5)
        stop.close()
