from __future__ import annotations

from spotwatch.faults import FaultState, observe


def test_a_fault_is_reported_when_it_starts_changes_and_clears_only() -> None:
    state = FaultState()
    changes = []
    for now, kind in [
        (0, None),
        (5, "timeout"),
        (10, "timeout"),
        (15, "timeout"),
        (20, "server-error"),
        (25, None),
        (30, None),
    ]:
        step = observe(state, kind, float(now))
        changes.append(step.change)
        state = step.state
    assert changes == [None, "started", None, None, "changed", "cleared", None]


def test_fault_state_counts_polls_and_keeps_its_start() -> None:
    step = observe(FaultState(), "throttled", 3.0)
    step = observe(step.state, "throttled", 8.0)
    assert step.state == FaultState("throttled", 3.0, 2)
    cleared = observe(step.state, None, 13.0)
    assert cleared.previous.polls == 2 and cleared.previous.since == 3.0
    assert cleared.state == FaultState()
