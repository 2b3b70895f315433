"""The fleet watcher's side of SQS: the messages it holds, and its calls to the queue.

Every call is batched where SQS allows it (up to MAX_BATCH entries): extending the
visibility of the messages in hand, handing messages back (visible at once), and
deleting handled ones, which wait up to DELETE_DELAY to share a call. A failed
call is logged and never raised: a message that is not deleted or extended comes
back when its visibility timeout ends, and the event id LRU skips a repeat.

Deletes are made by threads of their own, as many as there are receivers (each
receive brings at most MAX_BATCH messages, each delete call takes as many): made
by the book-keeper, a slow queue held up its extensions, and in a wave of 10,000
the deletes fell behind the hooks and the watcher sat out the backlog at the end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from spotwatch import fleet_schedule as schedule
from spotwatch.errors import aws_error_text
from spotwatch.fleet_events import FleetEvent, NotAnEvent, parse_message
from spotwatch.fleet_tags import lookable

DELETE_DELAY = 1.0  # seconds a handled message may wait to be deleted in a batch
EXTEND_RETRY = 1.0  # after a failed extension call: not again before this


@dataclass
class Received:
    message: dict[str, Any]
    event: FleetEvent | None
    problem: str  # why it is not an event, when event is None
    received: float  # monotonic
    lost: bool = False  # another watcher may have it now: run no further hook

    @classmethod
    def parse(cls, message: dict[str, Any], received: float) -> Received:
        """A message as received at ``received`` (monotonic): its event, or why none."""
        try:
            event = parse_message(str(message.get("Body", "")))
        except NotAnEvent as exc:
            return cls(message, None, exc.reason, received)
        return cls(message, event, "", received)

    def excerpt(self, limit: int = 200) -> str:
        body = str(self.message.get("Body", ""))
        return body if len(body) <= limit else body[:limit] + "..."

    @property
    def message_id(self) -> str:
        return str(self.message.get("MessageId", ""))

    @property
    def receipt(self) -> str:
        return str(self.message.get("ReceiptHandle", ""))

    @property
    def receive_count(self) -> str:
        return str(self.message.get("Attributes", {}).get("ApproximateReceiveCount", ""))

    @property
    def sent(self) -> float | None:
        """When SQS got it (epoch seconds), if it said."""
        try:
            return int(self.message.get("Attributes", {})["SentTimestamp"]) / 1000.0
        except (KeyError, TypeError, ValueError):
            return None

    def order_key(self, key: str) -> str:
        """What must not run twice at once: the instance, else the event, else the message."""
        event = self.event
        if event is None:
            return f"message:{key}"
        if lookable(event.region, event.instance_id) or event.instance_id != "unknown":
            return f"instance:{event.region}/{event.instance_id}"
        if event.capacity_reservation_id:
            return f"reservation:{event.region}/{event.capacity_reservation_id}"
        return f"event:{event.event_id}"

    def also_keys(self) -> tuple[str, ...]:
        """The other instances (and the reservation) the event names: it keeps its
        place among their events too."""
        event = self.event
        if event is None:
            return ()
        keys = [f"instance:{event.region}/{i}" for i in event.instance_ids[1:]]
        if event.capacity_reservation_id and event.instance_ids:
            keys.append(f"reservation:{event.region}/{event.capacity_reservation_id}")
        return tuple(keys)


def extension_outcome(
    chunk: Sequence[tuple[schedule.Slot, Received]],
    failed: Mapping[int, str],
    slots: Mapping[str, schedule.Slot],
    asked: float,
) -> tuple[list[schedule.Slot], list[tuple[schedule.Slot, Received, str]]]:
    """After one extension call (``failed``: entry number -> error) made at
    ``asked``: the slots still in hand that it renewed, and those lost with the
    error (it failed once their time had run out: another watcher may have them).
    A failure before then changes nothing; the next round asks again."""
    renewed, lost = [], []
    for n, (slot, item) in enumerate(chunk):
        current = slots.get(slot.key)
        if current is None:
            continue  # finished meanwhile
        failure = failed.get(n)
        if failure is None:
            renewed.append(current)
        elif current.hidden_until <= asked:
            lost.append((current, item, failure))
    return renewed, lost


class FleetQueue:
    """The SQS calls of one watcher, counted in ``calls``. Thread-safe: the receiver,
    the workers and the book-keeper call it."""

    def __init__(self, sqs: Any, queue_url: str, *, log: Any,
                 clock: Callable[[], float] = time.monotonic,
                 deleters: int = 1) -> None:  # fmt: skip
        self._sqs = sqs
        self._url = queue_url
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._ready: list[Received] = []  # handled, to be deleted
        self._ready_since = 0.0
        self._extend_fault: str | None = None
        self._extend_after = 0.0
        self.calls: dict[str, int] = {"receive": 0, "delete": 0, "extend": 0, "release": 0}
        self._deleters = max(1, deleters)
        self._batches: queue.Queue[Sequence[Received] | None] = queue.Queue()
        self._delete_threads: list[threading.Thread] = []

    def _count(self, call: str) -> None:
        with self._lock:  # several receivers and deleters count at once
            self.calls[call] += 1

    def attributes(self) -> dict[str, str]:
        """The queue's visibility timeout, redrive policy and ARN; raises what boto3 raises."""
        attrs: dict[str, str] = self._sqs.get_queue_attributes(
            QueueUrl=self._url,
            AttributeNames=["VisibilityTimeout", "RedrivePolicy", "QueueArn"],
        )["Attributes"]
        return attrs

    def receive(self, want: int, wait_seconds: int, visibility: int | None) -> list[dict[str, Any]]:
        """One long poll for up to ``want`` messages; raises what boto3 raises."""
        request: dict[str, Any] = {
            "QueueUrl": self._url,
            "MaxNumberOfMessages": want,
            "WaitTimeSeconds": wait_seconds,
            "AttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
        }
        if visibility is not None:
            request["VisibilityTimeout"] = visibility
        self._count("receive")
        messages: list[dict[str, Any]] = self._sqs.receive_message(**request).get("Messages", [])
        return messages

    # -- keeping messages hidden
    def may_extend(self) -> bool:
        """False for a second after a failed extension call (not ten calls a second to a fault)."""
        return self._clock() >= self._extend_after

    def extend(self, items: Sequence[Received], seconds: int) -> dict[int, str] | None:
        """One ChangeMessageVisibilityBatch for up to MAX_BATCH ``items``: the index and
        error of each that failed, or None when the call itself failed (logged once)."""
        entries = [{"Id": str(n), "ReceiptHandle": item.receipt, "VisibilityTimeout": seconds}
                   for n, item in enumerate(items)]
        self._count("extend")
        try:
            response = self._sqs.change_message_visibility_batch(
                QueueUrl=self._url, Entries=entries)
        except Exception as exc:  # tried again next tick; logged once
            text = aws_error_text(exc)
            if text != self._extend_fault:
                self._extend_fault = text
                self._log.warning("fleet.extend_failed", error=text, count=len(items),
                                  note="retrying; a message whose timeout runs out may "
                                  "go to another watcher")
            self._extend_after = self._clock() + EXTEND_RETRY
            return None
        self._extend_fault = None
        return {int(f.get("Id", 0)): f"{f.get('Code')}: {f.get('Message', '')}"
                for f in (response or {}).get("Failed", [])}

    def set_visibility(self, item: Received, seconds: int, log: Any) -> None:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._url,
                ReceiptHandle=item.receipt,
                VisibilityTimeout=seconds,
            )
        except Exception as exc:  # it comes back anyway when its timeout ends
            log.warning("fleet.visibility_failed", error=aws_error_text(exc))

    def release(self, items: Sequence[Received]) -> None:
        """Hand messages not yet started back to the queue, visible at once."""
        if not items:
            return
        failed, error = 0, ""
        for chunk in schedule.batches(items):
            entries = [{"Id": str(i), "ReceiptHandle": r.receipt, "VisibilityTimeout": 0}
                       for i, r in enumerate(chunk)]
            self._count("release")
            try:
                self._sqs.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
            except Exception as exc:
                failed += len(chunk)
                error = aws_error_text(exc)
        if failed:
            self._log.warning("fleet.release_failed", error=error, count=failed,
                              note="they come back when their visibility timeout ends")
        self._log.info("fleet.released", count=len(items) - failed, reason="stopping")

    # -- deleting handled messages, in batches
    def delete(self, item: Received) -> bool:
        """Queue ``item`` for deletion; True once a whole batch is ready."""
        with self._lock:
            if not self._ready:
                self._ready_since = self._clock()
            self._ready.append(item)
            return len(self._ready) >= schedule.MAX_BATCH

    def has_ready(self) -> bool:
        with self._lock:
            return bool(self._ready)

    def flush_deletes(self, *, busy: bool, force: bool = False) -> None:
        """Hand what is ready to the deleters if a batch is full, it waited
        DELETE_DELAY, nothing else is in hand (``busy`` False), or ``force``;
        with ``force``, return once every delete handed over is made."""
        with self._lock:
            flush = force or schedule.flush_deletes(
                len(self._ready), oldest_age=self._clock() - self._ready_since,
                busy=busy, max_delay=DELETE_DELAY)
            items, self._ready = (self._ready, []) if flush else ([], self._ready)
            if items and not self._delete_threads:
                self._delete_threads = [
                    threading.Thread(target=self._delete_loop, name=f"fleet-delete-{n}",
                                     daemon=True)
                    for n in range(self._deleters)
                ]
                for thread in self._delete_threads:
                    thread.start()
        for chunk in schedule.batches(items):
            self._batches.put(chunk)
        if force:
            self._batches.join()

    def close(self) -> None:
        """Make the deletes handed over, then end the deleters."""
        self._batches.join()
        for _ in self._delete_threads:
            self._batches.put(None)
        for thread in self._delete_threads:
            thread.join()
        self._delete_threads = []

    def _delete_loop(self) -> None:
        while True:
            chunk = self._batches.get()
            try:
                if chunk is None:
                    return
                self._delete_batch(chunk)
            except Exception:  # a bug of ours: the messages come back; the LRU skips them
                self._log.exception("fleet.delete_failed", count=len(chunk or ()))
            finally:
                self._batches.task_done()

    def _delete_batch(self, items: Sequence[Received]) -> None:
        if not items:
            return
        entries = [{"Id": str(i), "ReceiptHandle": r.receipt} for i, r in enumerate(items)]
        self._count("delete")
        try:
            response = self._sqs.delete_message_batch(QueueUrl=self._url, Entries=entries)
        except Exception as exc:  # the messages come back; the LRU skips them
            self._log.warning("fleet.delete_failed", error=aws_error_text(exc),
                              message_ids=[r.message_id for r in items])
            return
        for failure in response.get("Failed", []):
            item = items[int(failure.get("Id", 0))]
            self._log.warning("fleet.delete_failed", message_id=item.message_id,
                              error=f"{failure.get('Code')}: {failure.get('Message', '')}")
