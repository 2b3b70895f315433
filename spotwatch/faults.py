"""Log each IMDS fault once when it starts and once when it clears, not every poll."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaultState:
    """The fault in force for one source: its kind, since when, how many polls hit it."""

    kind: str | None = None
    since: float | None = None
    polls: int = 0


@dataclass(frozen=True)
class Transition:
    """What a poll's outcome means for the log: ``started``, ``changed``, ``cleared`` or None."""

    change: str | None
    state: FaultState
    previous: FaultState


def observe(state: FaultState, kind: str | None, now: float) -> Transition:
    """Fold one poll outcome (``kind`` None means the poll succeeded) into ``state``."""
    if kind is None:
        if state.kind is None:
            return Transition(None, state, state)
        return Transition("cleared", FaultState(), state)
    if state.kind is None:
        return Transition("started", FaultState(kind, now, 1), state)
    if state.kind != kind:
        return Transition("changed", FaultState(kind, now, 1), state)
    return Transition(None, FaultState(kind, state.since, state.polls + 1), state)
