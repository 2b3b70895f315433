"""``spotwatch fleet watch``: consume EC2 events from SQS and run the fleet hooks.

Receiver threads long-poll the queue (batches of up to 10; one per 32 workers,
the others only while the queue has a backlog) while up to
``--workers`` worker threads run events' hooks (``spotwatch.hooks`` /
``spotwatch.runner``, the same rules as on the instance); the main thread keeps
the books. The watcher holds at most ``2 x workers`` messages (the hand), so its
memory stays flat however deep the queue is. What may run next, what to extend,
when to delete are pure decisions in ``spotwatch.fleet_schedule``; the calls to
SQS (batched) are ``spotwatch.fleet_queue``'s; the settings are in
``spotwatch.fleet_settings``, stdout in ``spotwatch.fleet_output``, and the
assembly with real clients in ``spotwatch.fleet_daemon``.

The delivery rules (per-instance order, visibility kept while in hand, delete only
after every hook succeeded, duplicates skipped, bad bodies left for the dead-letter
queue) are the user's contract: docs/fleet.md states them, once; the tests in
``tests/test_fleet_watch.py`` hold them.

SIGTERM/SIGINT only set a flag (``spotwatch.stopper``). The watcher then stops
receiving, returns every message not started to the queue at once
(``ChangeMessageVisibilityBatch`` with 0), lets the running events' hooks finish
(each within ``--hook-timeout``) and exits 0. A receive in progress is a long
poll of up to ``--wait-seconds``; it is allowed to return (its messages are
handed back too).
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from spotwatch import fleet_schedule as schedule
from spotwatch.clocks import SYSTEM, Clocks
from spotwatch.errors import SpotwatchError, aws_error_text
from spotwatch.fleet_events import FleetEvent, SeenEvents, event_environment, lifecycle_action
from spotwatch.fleet_output import EventOutput, remove_event_file, write_event_file
from spotwatch.fleet_queue import FleetQueue, Received, extension_outcome
from spotwatch.fleet_schedule import Slot
from spotwatch.fleet_settings import MAX_VISIBILITY_TIMEOUT, FleetWatchSettings
from spotwatch.fleet_tags import TagLookup
from spotwatch.fleet_wiring import STDOUT_REPORTING, FleetClients, FleetHooks, FleetReporting
from spotwatch.hooks import REFUSED, log_plan
from spotwatch.metrics import FleetMetrics
from spotwatch.runner import HookSettings

if TYPE_CHECKING:
    from spotwatch.hooks import HookPlan
    from spotwatch.stopper import StopFlag

BACKOFF_MAX = 30.0
TICK = 0.1  # the book-keeper's beat while messages are in hand
IDLE_TICK = 0.25
# After a signal, how long the receiver's long poll (up to 20 s) may still hold the exit.
RECEIVE_GRACE = 2.0
RATE_WINDOW = 10.0

DONE = "done"
FAILED = "failed"
DUPLICATE = "duplicate"
BAD = "bad"
IGNORED = "ignored"
LOST = "lost"
RELEASED = "released"
# Why the runner stopped between an event's hooks (hooks.stopped).
LOST_REASON = "the message's visibility ran out; another watcher may have it"

class FleetWatcher:
    """The consumer: a receiver thread, ``settings.workers`` workers, and the main
    thread keeping the books (visibility, deletes, status, stopping). Clients, hook
    planning, the runner and the clock are passed in."""

    def __init__(
        self,
        settings: FleetWatchSettings,
        *,
        clients: FleetClients,
        hooks: FleetHooks,
        stop: StopFlag,
        reporting: FleetReporting = STDOUT_REPORTING,
        backoff: Callable[[float], object] | None = None,
        clocks: Clocks = SYSTEM,
    ) -> None:
        self.settings = settings
        self._log = clocks.logger()
        clock = clocks.monotonic
        metrics, out = reporting.metrics, reporting.out
        # Thread-safe; called from the receiver and the workers, never under self._lock
        # (a write of the metrics file must not hold up the book-keeping).
        self._metrics = metrics if metrics is not None else FleetMetrics()  # counts only
        self._queue = FleetQueue(clients.sqs, settings.queue_url, log=self._log, clock=clock,
                                 deleters=schedule.receivers_for(settings.workers))
        self._stop = stop
        self._plan = hooks.plan
        self._runner = hooks.runner
        self._workdir = hooks.workdir
        self._output = EventOutput(out if out is not None else sys.stdout,
                                   json_output=settings.json_output, log=self._log)
        self._environ = hooks.environ if hooks.environ is not None else os.environ
        self._clock = clock
        self._wall_clock = clocks.wall
        self._lifecycle = clients.lifecycle
        self._status_interval = reporting.status_interval
        self._lookup = TagLookup(clients.tags, log=self._log)
        self._seen = SeenEvents()
        self._visibility = settings.visibility_timeout
        self._extend_to, self._renew_below = schedule.hold_for(self._visibility or 0)
        self._capacity = schedule.capacity_for(settings.workers)
        self._last_plan_warnings: tuple[Any, ...] | None = None
        self._receive_fault: str | None = None
        self._status = (
            settings.status if settings.status is not None
            else (not settings.json_output and self._output.is_terminal())
        )
        # Everything below is shared between threads: guarded by _lock.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers wait here for a slot
        self._room = threading.Condition(self._lock)  # the receiver waits here for room
        self._wake = threading.Event()  # nudges the book-keeper (deletes ready, hand empty)
        self._quit = threading.Event()  # ends the receiver's back-off sleeps
        self._backoff = backoff if backoff is not None else self._quit.wait
        self._slots: dict[str, Slot] = {}
        self._items: dict[str, Received] = {}
        self._seq = 0
        self._closing = False  # receive no more
        self._stopping = False  # start no more hooks either
        self._receivers = schedule.receivers_for(settings.workers)
        self._receiving = 0  # receivers still running
        self._asking = 0  # messages asked for in receives under way: room they will take
        self._backlog = False  # the last receive came back full: the extra receivers poll
        self._receiver_done = False  # every receiver
        self._receiver_failed = False
        self._handled_at: deque[float] = deque(maxlen=100000)
        self.released = 0
        self.counts: dict[str, int] = {
            k: 0 for k in (DONE, FAILED, DUPLICATE, BAD, IGNORED, LOST)
        }

    @property
    def handled(self) -> int:
        return sum(self.counts.values())

    # -- start and the book-keeping loop ------------------------------------------------
    def start(self) -> None:
        """Check the queue is there and learn its visibility timeout; fail fast if not."""
        try:
            attrs = self._queue.attributes()
        except Exception as exc:  # any failure here is the operator's to fix
            raise SpotwatchError(
                f"cannot use queue {self.settings.queue_url}: {aws_error_text(exc)} "
                "(check the URL, the region, and the IAM policy for 'fleet watch')"
            ) from None
        if self._visibility is None:
            self._visibility = int(attrs.get("VisibilityTimeout", "30"))
            self._extend_to, self._renew_below = schedule.hold_for(self._visibility)
        if "RedrivePolicy" not in attrs:
            self._log.warning(
                "fleet.no_dead_letter_queue",
                queue_url=self.settings.queue_url,
                advice="messages that are not events stay until they expire; "
                "run 'spotwatch fleet setup' to add a dead-letter queue",
            )
        self._log.info(
            "fleet.started",
            pid=os.getpid(),
            queue_url=self.settings.queue_url,
            queue_arn=attrs.get("QueueArn"),
            visibility_timeout=self._visibility,
            wait_seconds=self.settings.wait_seconds,
            hooks_dir=str(self.settings.hooks_dir) if self.settings.hooks_dir else None,
            max_messages=self.settings.max_messages,
            workers=self.settings.workers,
            receivers=self._receivers,
            hand=self._capacity,
        )

    def run(self) -> int:
        self.start()
        self._lookup.start()
        receivers = [
            threading.Thread(target=self._receive_loop, args=(n,), name=f"fleet-receive-{n}",
                             daemon=True)
            for n in range(self._receivers)
        ]
        self._receiving = len(receivers)
        workers = [
            threading.Thread(target=self._work_loop, name=f"fleet-worker-{n}", daemon=True)
            for n in range(self.settings.workers)
        ]
        for thread in (*receivers, *workers):
            thread.start()
        try:
            self._keep_books()
        finally:
            self._begin_stop()  # after an error of ours: still hand back what did not start
            for worker in workers:
                worker.join()
            self._flush_deletes(force=True)
            signalled = self._stop.is_set()
            grace = RECEIVE_GRACE if signalled else self.settings.wait_seconds + 30
            for receiver in receivers:
                receiver.join(timeout=grace)
            if signalled and any(receiver.is_alive() for receiver in receivers):
                # SQS cannot cancel a long poll; a message it hands this process now
                # is simply delivered again once its visibility timeout runs out.
                self._log.info("fleet.receive_abandoned", grace=RECEIVE_GRACE,
                               note="a message received now reappears after the "
                               f"visibility timeout ({self._visibility} s)")
            self._lookup.close()
            self._queue.close()
            self._metrics.flush(force=True)
        self._log.info("fleet.stopped", reason=self._stop_reason(), released=self.released,
                       sqs_calls=self._queue.calls,
                       tags_calls=getattr(self._lookup.tags, "calls", None),
                       tags_snapshots=getattr(self._lookup.tags, "snapshots", None),
                       **self.counts)
        return 1 if self._receiver_failed else 0

    def _keep_books(self) -> None:
        next_status = self._clock() + self._status_interval
        while True:
            if self._stop.is_set():
                self._begin_stop()
            with self._lock:
                if self._enough() and not self._closing:
                    self._closing = True
                    self._quit.set()
                    self._work.notify_all()
                    self._room.notify_all()
                # Nothing more comes once the receiver is done (stopping, enough, or
                # a bug of ours in it): finish what is in hand, then return. After a
                # signal, do not sit out its long poll: run() gives it a short grace.
                finished = not self._slots and (self._receiver_done or self._stop.is_set())
                busy = bool(self._slots)
            self._extend_due()
            self._flush_deletes()
            self._metrics.flush()
            if self._status and self._clock() >= next_status:
                next_status = self._clock() + self._status_interval
                self._print_status()
            if finished:
                return
            self._wake.wait(TICK if busy or self._queue.has_ready() else IDLE_TICK)
            self._wake.clear()

    def _begin_stop(self) -> None:
        """Receive no more, start no more; hand back at once what did not start."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = self._closing = True
            waiting = [key for key, slot in self._slots.items() if not slot.running]
            items = [self._items.pop(key) for key in waiting]
            for key in waiting:
                del self._slots[key]
            self.released += len(items)
            running = len(self._slots)
            self._work.notify_all()
            self._room.notify_all()
        self._quit.set()
        # Said at once, before the hand-back and the wait for running hooks.
        self._log.info("fleet.stopping", reason=self._stop_reason(), running=running,
                       releasing=len(items))
        self._queue.release(items)

    def _enough(self) -> bool:
        limit = self.settings.max_messages
        return limit is not None and self.handled >= limit

    def _stop_reason(self) -> str:
        if self._stop.is_set():
            return "signal"
        if self._receiver_failed:
            return "error"
        return "max-messages" if self._enough() else "done"

    # -- the receiver thread --------------------------------------------------------------
    def _receive_loop(self, index: int = 0) -> None:
        delay = 1.0
        try:
            while True:
                with self._lock:
                    while True:
                        if self._closing:
                            return
                        limit = self.settings.max_messages
                        held = len(self._slots)
                        want = schedule.room(held + self._asking, self._capacity, limit=limit,
                                             taken=self.handled + held + self._asking)
                        if want > 0 and (index == 0 or self._backlog):
                            self._asking += want
                            break
                        if limit is not None and self.handled + held >= limit:
                            return  # the rest of the work is in hand
                        self._room.wait(1.0)
                asked = self._clock()  # SQS hides the messages from about now
                try:
                    messages = self._queue.receive(want, self.settings.wait_seconds,
                                                   self.settings.visibility_timeout)
                except Exception as exc:  # log once, back off, keep watching
                    with self._lock:
                        self._asking -= want
                        self._backlog = False
                    self._metrics.receive_failed()
                    text = aws_error_text(exc)
                    if text != self._receive_fault:
                        self._log.error("fleet.receive_failed", error=text, retry_in=delay,
                                        queue_url=self.settings.queue_url)
                        self._receive_fault = text
                    self._backoff(delay)
                    delay = min(BACKOFF_MAX, delay * 2)
                    continue
                delay = 1.0
                if self._receive_fault is not None:
                    self._log.info("fleet.receive_recovered", queue_url=self.settings.queue_url)
                    self._receive_fault = None
                self._metrics.receive_ok(len(messages))
                self._take([Received.parse(m, asked) for m in messages], asked, want)
        except Exception:  # a bug of ours: finish what is in hand, exit 1 (to be restarted)
            self._receiver_failed = True
            self._log.exception("fleet.receiver_failed",
                                note="no further messages received; exiting once the "
                                "messages in hand are handled")
        finally:
            with self._lock:
                self._receiving -= 1
                self._receiver_done = self._receiving <= 0
                self._work.notify_all()
                self._room.notify_all()  # the others may be waiting on this one's ask
            self._wake.set()

    def _take(self, received: list[Received], asked: float, want: int = 0) -> None:
        """Put freshly received messages in the hand (or straight back, when stopping);
        ``want`` is how many the receive asked for, a full batch meaning a backlog."""
        hidden_until = asked + (self._visibility or 0)
        with self._lock:
            self._asking -= want
            backlog = bool(received) and len(received) >= want
            if (backlog and not self._backlog) or len(received) < want:
                self._room.notify_all()  # the extra receivers go to work; room came free
            self._backlog = backlog
            if not received:
                return
            if self._stopping:
                self.released += len(received)
                back = received
            else:
                back = []
                for item in received:
                    self._seq += 1
                    key = str(self._seq)
                    self._items[key] = item
                    self._slots[key] = Slot(key, item.order_key(key), self._seq, hidden_until,
                                            also=item.also_keys())
                self._work.notify(len(received))
        if back:
            self._queue.release(back)
            return
        with self._lock:
            seen = self._seen
            wanted = [
                (r.event.region, run.instance_id) for r in received
                if r.event is not None and r.event.actionable and r.event.event_id not in seen
                for run in r.event.runs()
            ]
        self._lookup.want(wanted)

    # -- the workers ----------------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._stopping or self._stop.is_set():
                        return  # the book-keeper hands back what waits
                    slot = schedule.next_to_run(self._slots.values(), self._clock())
                    if slot is not None:
                        break
                    if self._receiver_done and not self._slots:
                        return
                    self._work.wait(1.0)  # woken by notify; the timeout only bounds a slip
                self._slots[slot.key] = replace(slot, running=True)
                item = self._items[slot.key]
                if schedule.next_to_run(self._slots.values(), self._clock()) is not None:
                    self._work.notify()  # more is runnable: pass the word on
            self._metrics.started()
            try:
                outcome = self.handle(item)
            except Exception:  # a bug or a full disk must not stop the fleet's watcher
                self._log.exception("fleet.handle_failed", message_id=item.message_id,
                                    note="left in the queue for redelivery")
                outcome = FAILED
            with self._lock:
                self._slots.pop(slot.key, None)
                self._items.pop(slot.key, None)
                self.counts[outcome] += 1
                self._handled_at.append(self._clock())
                self._work.notify()  # its instance's next event may run now
                self._room.notify()
                idle = not self._slots
            self._metrics.finished(outcome)
            if idle:
                self._wake.set()

    # -- one message --------------------------------------------------------------------
    def handle(self, item: Received) -> str:
        event = item.event
        log = self._log.bind(message_id=item.message_id)
        if event is None:
            log.warning("fleet.bad_message", reason=item.problem,
                        receive_count=item.receive_count, body=item.excerpt())
            return BAD
        log = log.bind(event_id=event.event_id)
        if not event.actionable:
            log.info("fleet.ignored", source=event.source, detail_type=event.detail_type,
                     reason="not an EC2 event type spotwatch acts on")
            self._delete(item)
            return IGNORED
        with self._lock:
            duplicate = event.event_id in self._seen
        if duplicate:
            log.info("fleet.duplicate", instance_id=event.instance_id, kind=event.kind,
                     note="already acted on by this watcher; deleted without running hooks")
            self._delete(item)
            return DUPLICATE
        runs = event.runs()
        if len(runs) == 1:
            tags = self._announce(item, event, log)
            if self.settings.hooks_dir is None:
                self._done(item, event)
                return DONE
            return self._run_hooks(item, event, tags, log)
        # One hook run per instance, in the order the event names them. A run that
        # succeeded is not repeated when the message comes back after a later one failed.
        for run in runs:
            run_id = f"{event.event_id}#{run.instance_id}"
            with self._lock:
                done_before = run_id in self._seen
            if done_before:
                log.info("fleet.duplicate", instance_id=run.instance_id, kind=run.kind,
                         note="hooks already ran for this instance of the event")
                continue
            tags = self._announce(item, run, log)
            if self.settings.hooks_dir is not None:
                outcome = self._run_hooks(item, run, tags, log, finish=False)
                if outcome != DONE:
                    return outcome
            with self._lock:
                self._seen.add(run_id)
        self._done(item, event)
        return DONE

    def _announce(self, item: Received, event: FleetEvent, log: Any) -> Mapping[str, str]:
        """Print and log one hook run's event; its instance's tags."""
        tags = self._lookup.get(event.region, event.instance_id)
        self._output.event(event, tags)
        log.info("fleet.event", receive_count=item.receive_count, **event.log_fields())
        return tags

    def _run_hooks(self, item: Received, event: FleetEvent, tags: Mapping[str, str],
                   log: Any, *, finish: bool = True) -> str:
        """Run the hooks for ``event``; with ``finish``, a success also deletes the
        message (else the caller does, once every instance's run succeeded)."""
        assert self.settings.hooks_dir is not None
        plan = self._plan(self.settings.hooks_dir)
        self._log_plan(plan)
        started = self._clock()
        try:
            path = write_event_file(self._workdir, event)
        except OSError as exc:
            log.error("fleet.event_file_failed", path=str(exc.filename), error=str(exc),
                      note="hooks not run; left in the queue for redelivery")
            self._queue.set_visibility(item, self._visibility or 0, log)
            return FAILED
        action = lifecycle_action(event) if self._lifecycle is not None else None
        beats = None
        try:
            if action is not None and self._lifecycle is not None:
                beats = self._lifecycle.heartbeats(event.region, action, log)
            env = event_environment(self._environ, event, tags, str(path))
            results = self._runner(
                plan.hooks,
                env,
                settings=HookSettings(
                    hook_timeout=self.settings.hook_timeout, kill_grace=self.settings.kill_grace
                ),
                # Finish the message in hand: a stop request does not cut its hooks
                # short; only losing the message to another watcher does.
                should_stop=lambda: LOST_REASON if item.lost else False,
                clocks=Clocks(log=log),
            )
        finally:
            remove_event_file(path)
            if beats is not None:
                beats.stop()
        self._metrics.hook_results(results)
        failed = [f"{r.name}: {r.description}" for r in results if not r.ok]
        refused = [f"{r.name}: {r.reason}" for r in plan.rejected if r.severity == REFUSED]
        if plan.problem:
            refused.insert(0, plan.problem)
        duration = round(self._clock() - started, 3)
        if item.lost:
            return LOST
        if failed or refused or len(results) < len(plan.hooks):
            retry_in = self._visibility or 0
            log.warning("fleet.hooks_failed", failed=failed, refused=refused,
                        hooks=len(results), duration=duration, retry_in=retry_in,
                        receive_count=item.receive_count,
                        note="left in the queue for redelivery")
            self._queue.set_visibility(item, retry_in, log)
            return FAILED
        if action is not None and self._lifecycle is not None and not self._lifecycle.complete(
                event.region, action, log):
            self._queue.set_visibility(item, self._visibility or 0, log)
            return FAILED
        if finish:
            self._done(item, event)
        log.info("fleet.handled", hooks=len(results), duration=duration,
                 instance_id=event.instance_id)
        return DONE

    def _done(self, item: Received, event: FleetEvent) -> None:
        with self._lock:
            self._seen.add(event.event_id)
        self._delete(item)

    def _log_plan(self, plan: HookPlan) -> None:
        warnings = (plan.problem, *plan.warnings)
        with self._lock:
            if warnings == self._last_plan_warnings:
                return  # said once; not again for every event
            self._last_plan_warnings = warnings
        log_plan(self._log, plan)

    def _print_status(self) -> None:
        now, wall = self._clock(), self._wall_clock()
        with self._lock:
            running = sum(1 for s in self._slots.values() if s.running)
            held = len(self._slots)
            ages = [wall - sent if (sent := i.sent) is not None else now - i.received
                    for i in self._items.values()]
            events_per_s = schedule.rate(self._handled_at, now, RATE_WINDOW)
        oldest = f"{max(ages):.0f} s" if ages else "-"
        self._output.line(f"status: {events_per_s:.1f} events/s, {running} running, "
                    f"{held} in hand, oldest message {oldest}")

    # -- keeping the messages in hand hidden ----------------------------------------------
    def _extend_due(self) -> None:
        """Keep every message in hand hidden: one batch call for those running low."""
        if not self._queue.may_extend():
            return
        with self._lock:
            due = [(s, self._items[s.key])
                   for s in schedule.to_extend(self._slots.values(), self._clock(),
                                               renew_below=self._renew_below)]
        seconds = int(min(MAX_VISIBILITY_TIMEOUT, self._extend_to))
        for chunk in schedule.batches(due):
            asked = self._clock()
            failed = self._queue.extend([item for _, item in chunk], seconds)
            if failed is None:
                return
            dropped = 0  # lost while waiting for a worker: no worker will report them
            with self._lock:
                renewed, lost = extension_outcome(chunk, failed, self._slots, asked)
                for slot in renewed:
                    self._slots[slot.key] = replace(slot, hidden_until=asked + seconds)
                    if not slot.running:
                        self._work.notify()  # it may have been waiting for this
                for slot, item, _ in lost:
                    item.lost = True
                    if not slot.running:
                        del self._slots[slot.key]
                        del self._items[slot.key]
                        self.counts[LOST] += 1
                        dropped += 1
                        self._room.notify()
                        self._work.notify()
            for _ in range(dropped):
                self._metrics.finished(LOST, started=False)
            for _, item, error in lost:
                self._log.warning("fleet.lost_message", message_id=item.message_id, error=error,
                                  note="its visibility timeout ran out; another watcher has it "
                                  "or will")

    def _delete(self, item: Received) -> None:
        if self._queue.delete(item):
            self._wake.set()

    def _flush_deletes(self, *, force: bool = False) -> None:
        with self._lock:
            busy = bool(self._slots)
        self._queue.flush_deletes(busy=busy, force=force)

