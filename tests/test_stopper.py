from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from spotwatch.stopper import Stopper


@pytest.fixture
def stopper():
    s = Stopper()
    s.install()
    yield s
    s.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cuts_a_long_sleep_short_and_is_recorded(stopper: Stopper, signum: int) -> None:
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signum))
    timer.start()
    began = time.monotonic()
    assert stopper.sleep(30.0) is True
    assert time.monotonic() - began < 5.0
    assert stopper.signum == signum and stopper.is_set()
    timer.join()


def test_sleep_runs_its_course_without_a_signal(stopper: Stopper) -> None:
    began = time.monotonic()
    assert stopper.sleep(0.05) is False
    assert time.monotonic() - began >= 0.04
    assert not stopper.is_set()


def test_set_from_another_thread_wakes_the_sleeper(stopper: Stopper) -> None:
    threading.Timer(0.1, stopper.set).start()
    began = time.monotonic()
    assert stopper.wait(30.0) is True
    assert time.monotonic() - began < 5.0
    assert stopper.signum is None


def test_uninstall_restores_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    s = Stopper()
    s.install()
    assert signal.getsignal(signal.SIGTERM) != before
    s.close()
    assert signal.getsignal(signal.SIGTERM) == before
