from __future__ import annotations

import pytest

from spotwatch.schedule import deadline_on_monotonic, next_tick


def test_ticks_are_anchored_to_start_so_poll_time_does_not_drift() -> None:
    # Each poll took 0.3 s: ticks stay at 5, 10, 15 ... not 5.3, 10.6 ...
    start, now, ticks = 100.0, 100.0, []
    for _ in range(4):
        now = next_tick(start, 5.0, now + 0.3)
        ticks.append(now - start)
    assert ticks == [5.0, 10.0, 15.0, 20.0]


def test_a_slow_poll_skips_missed_ticks_instead_of_bursting() -> None:
    # A poll that ran 12.5 s past the start overran ticks 5 and 10: the next is 15.
    assert next_tick(0.0, 5.0, 12.5) == 15.0
    # Exactly on a tick: the next one, not the same one again.
    assert next_tick(0.0, 5.0, 10.0) == 15.0


def test_clock_before_start_gives_first_tick() -> None:
    assert next_tick(10.0, 1.0, 9.0) == 11.0


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        next_tick(0.0, 0.0, 1.0)


def test_deadline_moves_to_monotonic_clock_once() -> None:
    # 90 s after wall "now" is 90 s after monotonic "now", whatever the wall clock does later.
    assert deadline_on_monotonic(1_000_090.0, 1_000_000.0, 50.0) == 140.0
    # A deadline already past stays in the past on the monotonic clock too.
    assert deadline_on_monotonic(999_990.0, 1_000_000.0, 50.0) == 40.0
