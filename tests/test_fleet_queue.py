"""FleetQueue's deletes: made by threads of their own, side by side, so that a
slow queue holds up neither the book-keeper (its extensions) nor the other deletes."""

from __future__ import annotations

import threading
from typing import Any

from spotwatch.fleet_queue import FleetQueue, Received
from tests.fleet_helpers import FakeSqs, Log, body


def handled(count: int) -> list[Received]:
    return [Received.parse({"MessageId": f"m{n}", "ReceiptHandle": f"r{n}",
                            "Body": body(f"i-{n}")}, 0.0) for n in range(count)]


class BlockingDeletes(FakeSqs):
    """Each delete call waits until ``release`` is set; ``in_flight`` counts the calls
    waiting, ``together`` is set once ``expect`` of them wait at the same time."""

    def __init__(self, expect: int = 1) -> None:
        super().__init__([])
        self.release = threading.Event()
        self.together = threading.Event()
        self.expect = expect
        self.in_flight = 0
        self.lock = threading.Lock()

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.in_flight += 1
            if self.in_flight >= self.expect:
                self.together.set()
        self.release.wait(30)
        with self.lock:
            self.in_flight -= 1
        return super().delete_message_batch(**kwargs)


def test_a_slow_delete_holds_up_neither_the_caller_nor_an_extension() -> None:
    sqs = BlockingDeletes()
    fleet_queue = FleetQueue(sqs, "http://127.0.0.1:1/123456789012/q", log=Log())
    for item in handled(3):
        fleet_queue.delete(item)
    fleet_queue.flush_deletes(busy=False)  # returns with the delete still waiting
    assert sqs.together.wait(10), "the delete was never made"
    assert fleet_queue.extend(handled(2), 30) == {}  # the book-keeper's next call goes out
    assert sqs.deleted() == []
    sqs.release.set()
    fleet_queue.flush_deletes(busy=False, force=True)  # force: back once they are made
    assert sorted(sqs.deleted()) == ["r0", "r1", "r2"]
    assert fleet_queue.calls["delete"] == 1 and fleet_queue.calls["extend"] == 1
    fleet_queue.close()


def test_batches_are_deleted_side_by_side_by_as_many_deleters() -> None:
    sqs = BlockingDeletes(expect=4)
    fleet_queue = FleetQueue(sqs, "http://127.0.0.1:1/123456789012/q", log=Log(), deleters=4)
    for item in handled(40):
        fleet_queue.delete(item)
    fleet_queue.flush_deletes(busy=True)  # four full batches
    # One at a time, the fourth call would never start while the first waits.
    assert sqs.together.wait(10), "the four batches were not deleted side by side"
    sqs.release.set()
    fleet_queue.close()  # makes what was handed over, then ends the threads
    assert sorted(sqs.deleted()) == sorted(f"r{n}" for n in range(40))
    assert fleet_queue.calls["delete"] == 4
    assert not [t for t in threading.enumerate() if t.name.startswith("fleet-delete-")]
