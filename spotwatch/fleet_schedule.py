"""What the fleet watcher does next, decided over plain data. Pure: no I/O, no clock.

The watcher holds up to ``capacity`` messages ("the hand"), each a ``Slot``.
These functions answer its questions; ``spotwatch.fleet_watch`` asks them under
its lock and does the calls:

- ``room``: how many more messages to receive;
- ``next_to_run``: which waiting message a free worker takes (arrival order,
  but never two of one instance at once, and never one overtaking an earlier
  message for its instance);
- ``to_extend``: whose visibility to extend now (every message in hand whose
  hidden time runs low, in one batch);
- ``flush_deletes``: whether the handled messages are deleted now.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

MAX_BATCH = 10  # SQS's limit for ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch
MIN_LEFT = 1.0  # seconds of hidden time a message must have left to be started
WORKERS_PER_RECEIVER = 32
MAX_RECEIVERS = 8


@dataclass(frozen=True)
class Slot:
    """One message in hand.

    ``key`` names it in the hand; ``order_key`` is what must not run twice at
    once (the instance: ``region/instance-id``; the message itself when there is
    no instance); ``seq`` is its arrival number; ``hidden_until`` is when SQS
    would hand it to another watcher (monotonic seconds).
    """

    key: str
    order_key: str
    seq: int
    hidden_until: float
    running: bool = False
    # Further keys it holds: a Health event naming several instances runs for
    # each of them, so it must keep its place among each instance's events.
    also: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.order_key, *self.also)


def capacity_for(workers: int) -> int:
    """Messages held at most: enough to keep every worker fed while the next receive
    is under way, and never less than one receive's worth."""
    return max(MAX_BATCH, 2 * workers)


def receivers_for(workers: int) -> int:
    """Receiver threads: one per 32 workers, at most 8. One receive brings at most
    10 messages, so one receiver feeds at most 10 per round trip: 1 s hooks on 256
    workers need 256 a second, more than one receiver brings when a round trip
    takes over 40 ms. The receivers past the first poll only while the queue has a
    backlog (the last receive came back full), so an idle watcher long-polls once."""
    return max(1, min(MAX_RECEIVERS, -(-workers // WORKERS_PER_RECEIVER)))


def room(held: int, capacity: int, *, limit: int | None = None, taken: int = 0) -> int:
    """How many messages to ask for (0..10): free places in the hand, and no more than
    ``limit`` (``--max-messages``) less those ``taken`` already (handled or held)."""
    free = capacity - held
    if limit is not None:
        free = min(free, limit - taken)
    return max(0, min(MAX_BATCH, free))


def next_to_run(slots: Iterable[Slot], now: float, *, min_left: float = MIN_LEFT) -> Slot | None:
    """The first waiting slot, in arrival order, whose order key is not busy and that is
    surely still ours (hidden for ``min_left`` more seconds; else it waits for its
    extension, since another watcher may have received it).

    A key is busy while one of its slots runs; the first waiting slot of a key
    blocks the later ones of that key, so each instance's events keep their order.
    """
    busy: set[str] = set()
    waiting: list[Slot] = []
    for slot in slots:
        if slot.running:
            busy.update(slot.keys)
        else:
            waiting.append(slot)
    waiting.sort(key=lambda s: s.seq)
    for slot in waiting:
        if busy.isdisjoint(slot.keys) and slot.hidden_until - now >= min_left:
            return slot
        busy.update(slot.keys)  # an earlier one of these keys waits: later ones too
    return None


def to_extend(slots: Iterable[Slot], now: float, *, renew_below: float) -> list[Slot]:
    """Slots whose hidden time left is under ``renew_below`` seconds, most urgent first.

    Waiting messages are included: one another watcher took meanwhile would be
    handled twice.
    """
    due = [s for s in slots if s.hidden_until - now < renew_below]
    due.sort(key=lambda s: s.hidden_until)
    return due


def hold_for(visibility: float) -> tuple[float, float]:
    """(seconds to extend to, seconds left that trigger a renewal) for a queue whose
    visibility timeout is ``visibility``.

    At least 6 s (a short test timeout must not mean a call every tick), renewed
    at half, so one failed or late batch call still leaves time for the next.
    """
    extend_to = max(6.0, float(visibility))
    return extend_to, extend_to / 2


def flush_deletes(ready: int, *, oldest_age: float, busy: bool, max_delay: float) -> bool:
    """Delete now? At once when a full batch is ready or nothing else is in hand to
    join it; otherwise when the oldest ready message waited ``max_delay``."""
    if ready <= 0:
        return False
    return ready >= MAX_BATCH or not busy or oldest_age >= max_delay


def batches(items: Sequence[T], size: int = MAX_BATCH) -> list[Sequence[T]]:
    """``items`` cut into lists of at most ``size`` (SQS batch calls take 10)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def rate(handled: Sequence[float], now: float, window: float) -> float:
    """Events per second over the last ``window`` seconds, from their handled times."""
    recent = [t for t in handled if now - t <= window]
    return len(recent) / window if window > 0 else 0.0
