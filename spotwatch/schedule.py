"""The poll schedule: fixed ticks on the monotonic clock, never drifting, never bursting."""

from __future__ import annotations

import math


def next_tick(start: float, interval: float, now: float) -> float:
    """The first tick ``start + k * interval`` (k >= 1) strictly after ``now``.

    Ticks are anchored to ``start`` so a poll's own duration does not push the
    schedule back (no drift); a poll that overran one or more ticks skips them
    instead of firing them back to back (no burst).
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    if now < start:
        return start + interval
    missed = math.floor((now - start) / interval)
    return start + (missed + 1) * interval


def deadline_on_monotonic(deadline_wall: float, wall_now: float, mono_now: float) -> float:
    """Translate a wall-clock deadline to the monotonic clock, once, at detection.

    From then on, timeouts are measured on the monotonic clock, so a wall clock
    that jumps (NTP step, manual change) cannot shorten or stretch the hooks' time.
    """
    return mono_now + (deadline_wall - wall_now)
