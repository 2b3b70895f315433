"""The one stop primitive, with real signals: record in the handler, act in the loop."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from spotwatch.stopper import STOP_SIGNALS, Stopper


@pytest.fixture
def stopper():
    s = Stopper()
    s.install()
    yield s
    s.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cuts_a_long_wait_short_and_is_recorded(stopper: Stopper, signum: int) -> None:
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signum))
    timer.start()
    began = time.monotonic()
    assert stopper.wait(30.0) is True
    assert time.monotonic() - began < 5.0
    assert stopper.signum == signum and stopper.is_set()
    timer.join()


def test_a_signal_before_the_wait_ends_it_at_once(stopper: Stopper) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread before kill returns
    began = time.monotonic()
    assert stopper.wait(30.0) is True
    assert stopper.wait(30.0) is True  # stays stopped: every later wait returns at once
    assert time.monotonic() - began < 5.0


def test_wait_runs_its_course_without_a_signal(stopper: Stopper) -> None:
    began = time.monotonic()
    assert stopper.wait(0.05) is False
    assert time.monotonic() - began >= 0.04
    assert not stopper.is_set()


def test_set_from_another_thread_wakes_the_waiter(stopper: Stopper) -> None:
    threading.Timer(0.1, stopper.set).start()
    began = time.monotonic()
    assert stopper.wait(30.0) is True
    assert time.monotonic() - began < 5.0
    assert stopper.signum is None


def test_wake_cuts_a_wait_short_without_stopping(stopper: Stopper) -> None:
    threading.Timer(0.1, stopper.wake).start()
    began = time.monotonic()
    assert stopper.wait(30.0) is False  # news, not a stop
    assert time.monotonic() - began < 5.0
    assert not stopper.is_set()
    began = time.monotonic()
    assert stopper.wait(0.05) is False  # the wake-up was used up, not left pending
    assert time.monotonic() - began >= 0.04


def test_as_a_context_manager_it_routes_signals_for_the_block_only() -> None:
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    with Stopper() as stop:
        assert all(signal.getsignal(signum) != before[signum] for signum in STOP_SIGNALS)
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: only recorded
        assert stop.wait(30.0) is True and stop.signum == signal.SIGINT
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before
    stop.set()  # after close: harmless, writes to no file
    stop.wake()


def test_a_threading_event_and_a_stopper_are_both_stop_flags() -> None:
    # imds, the watch loops and status take either; the same two calls work on both.
    for flag in (threading.Event(), Stopper()):
        assert flag.is_set() is False and flag.wait(0.01) is False
        flag.set()
        assert flag.is_set() is True and flag.wait(0.01) is True
        if isinstance(flag, Stopper):
            flag.close()


def test_uninstall_restores_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    s = Stopper()
    s.install()
    assert signal.getsignal(signal.SIGTERM) != before
    s.close()
    assert signal.getsignal(signal.SIGTERM) == before


def test_only_the_stopper_installs_signal_handlers() -> None:
    # One place decides what a signal handler may do (record, nothing else).
    import spotwatch

    package = Path(spotwatch.__file__).parent
    installing = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "signal.signal(" in path.read_text() or "set_wakeup_fd(" in path.read_text()
    )
    assert installing == ["stopper.py"]
