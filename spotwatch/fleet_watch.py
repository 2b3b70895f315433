"""``spotwatch fleet watch``: consume EC2 events from SQS and run the fleet hooks.

The loop long-polls the queue (batches of up to 10), parses each EventBridge
envelope (``spotwatch.fleet_events``), looks up the instances' tags (one
DescribeInstances per region per batch, cached), prints a line per event and
runs the hooks with ``spotwatch.hooks`` / ``spotwatch.runner``, the same rules
as on the instance.

Delivery rules:

- a message is deleted only once every hook for it succeeded; on a failure it
  is made visible again after the visibility timeout (counted from the failure);
- an event id already acted on by this watcher is deleted without running hooks
  (EventBridge delivers at least once);
- a body that is not an EventBridge event is logged and left alone, so the
  queue's redrive policy moves it to the dead-letter queue;
- several watchers share a queue: SQS hides a received message from the others
  for the visibility timeout, which the watcher extends before long hook runs.

SIGTERM/SIGINT only set a flag (``spotwatch.stopper``). The watcher finishes the
message in hand and returns the rest of its batch to the queue at once. A
receive in progress is a long poll of up to ``--wait-seconds``; it is allowed to
return (its messages are handed back too), so a stop takes at most that long
plus the hooks in hand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TextIO

from spotwatch.errors import SpotwatchError, UsageError
from spotwatch.fleet_events import (
    FleetEvent,
    NotAnEvent,
    SeenEvents,
    event_line,
    event_record,
    hook_environment,
    parse_message,
)
from spotwatch.hooks import REFUSED
from spotwatch.logs import get_logger
from spotwatch.metrics import FleetMetrics

if TYPE_CHECKING:
    from spotwatch.hooks import HookPlan
    from spotwatch.runner import HookResult

MAX_BATCH = 10  # SQS ReceiveMessage limit
MAX_WAIT_SECONDS = 20  # SQS long-poll limit
MAX_VISIBILITY_TIMEOUT = 43200
TAGS_TTL = 300.0
UNKNOWN_TAGS_TTL = 60.0  # an instance DescribeInstances did not know may appear soon
HOLD_MARGIN = 10.0  # visibility asked for on top of a hook's worst case
DELETE_DELAY = 1.0  # seconds a handled message may wait to be deleted in a batch
BACKOFF_MAX = 30.0

DONE = "done"
FAILED = "failed"
DUPLICATE = "duplicate"
BAD = "bad"
IGNORED = "ignored"
LOST = "lost"

_QUEUE_URL_REGION = (
    re.compile(r"^https?://sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"),
    re.compile(r"^https?://([a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?/"),
)


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def sleep(self, seconds: float) -> bool: ...


@dataclass(frozen=True)
class WatchSettings:
    queue_url: str
    hooks_dir: Path | None = None
    json_output: bool = False
    max_messages: int | None = None  # stop after handling this many messages
    wait_seconds: int = MAX_WAIT_SECONDS
    visibility_timeout: int | None = None  # None: the queue's own
    hook_timeout: float = 30.0
    kill_grace: float = 5.0


def region_from_queue_url(url: str) -> str | None:
    """``us-east-1`` from ``https://sqs.us-east-1.amazonaws.com/...``; None for other hosts."""
    for pattern in _QUEUE_URL_REGION:
        match = pattern.match(url)
        if match:
            return match.group(1)
    return None


def check_settings(settings: WatchSettings) -> None:
    if not settings.queue_url:
        raise UsageError("no queue URL: pass --queue-url or set SPOTWATCH_QUEUE_URL")
    if not settings.queue_url.startswith(("https://", "http://")):
        raise UsageError(
            f"--queue-url {settings.queue_url!r} is not a URL; "
            "use what 'spotwatch fleet setup' printed"
        )
    if not 0 <= settings.wait_seconds <= MAX_WAIT_SECONDS:
        raise UsageError(f"--wait-seconds must be 0..{MAX_WAIT_SECONDS}")
    vt = settings.visibility_timeout
    if vt is not None and not 0 <= vt <= MAX_VISIBILITY_TIMEOUT:
        raise UsageError(f"--visibility-timeout must be 0..{MAX_VISIBILITY_TIMEOUT} seconds")
    if settings.max_messages is not None and settings.max_messages < 0:
        raise UsageError("--max-messages must be 0 or more")
    if settings.hook_timeout <= 0:
        raise UsageError("--hook-timeout must be more than 0 seconds")


class InstanceTags:
    """Instance tags by region and id: one DescribeInstances per region per batch, cached.

    Best effort: an instance EC2 does not know, or a failed call, gives no tags
    and never fails the event.
    """

    def __init__(
        self,
        client_for_region: Callable[[str], Any],
        *,
        ttl: float = TAGS_TTL,
        unknown_ttl: float = UNKNOWN_TAGS_TTL,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
    ) -> None:
        self._client_for_region = client_for_region
        self._ttl = ttl
        self._unknown_ttl = unknown_ttl
        self._clock = clock
        self._log = log if log is not None else get_logger()
        self._cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._failing: set[str] = set()
        self.calls = 0

    def prefetch(self, wanted: Iterable[tuple[str, str]]) -> None:
        """Look up every (region, instance id) not cached or expired, one call per region."""
        now = self._clock()
        by_region: dict[str, set[str]] = {}
        for region, instance_id in wanted:
            if region == "unknown" or not instance_id.startswith("i-"):
                continue
            hit = self._cache.get((region, instance_id))
            if hit is None or hit[0] <= now:
                by_region.setdefault(region, set()).add(instance_id)
        for region, ids in by_region.items():
            self._fetch(region, sorted(ids))

    def get(self, region: str, instance_id: str) -> dict[str, str]:
        hit = self._cache.get((region, instance_id))
        if hit is None or hit[0] <= self._clock():
            self.prefetch([(region, instance_id)])
            hit = self._cache.get((region, instance_id))
        return dict(hit[1]) if hit is not None else {}

    def _fetch(self, region: str, ids: Sequence[str]) -> None:
        found: dict[str, dict[str, str]] = {}
        try:
            client = self._client_for_region(region)
            # A filter, not InstanceIds: an unknown id then just is not returned
            # instead of failing the whole batch.
            for start in range(0, len(ids), 100):
                chunk = list(ids[start : start + 100])
                pages = client.get_paginator("describe_instances").paginate(
                    Filters=[{"Name": "instance-id", "Values": chunk}]
                )
                self.calls += 1
                for page in pages:
                    for reservation in page.get("Reservations", []):
                        for instance in reservation.get("Instances", []):
                            found[instance["InstanceId"]] = {
                                str(t.get("Key", "")): str(t.get("Value", ""))
                                for t in instance.get("Tags", [])
                            }
        except Exception as exc:  # tags are decoration, never a failure
            level = self._log.debug if region in self._failing else self._log.warning
            self._failing.add(region)
            level(
                "fleet.tags_failed",
                region=region,
                error=_error_text(exc),
                advice="grant ec2:DescribeInstances to show instance tags",
            )
            expires = self._clock() + self._unknown_ttl
            for instance_id in ids:
                self._cache[(region, instance_id)] = (expires, {})
            return
        self._failing.discard(region)
        now = self._clock()
        for instance_id in ids:
            tags = found.get(instance_id)
            if tags is None:
                self._cache[(region, instance_id)] = (now + self._unknown_ttl, {})
            else:
                self._cache[(region, instance_id)] = (now + self._ttl, tags)
        if len(self._cache) > 50000:  # a very long-running watcher: drop what expired
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}


@dataclass
class _Received:
    message: dict[str, Any]
    hidden_until: float  # monotonic: when other watchers may receive it again
    event: FleetEvent | None
    problem: str  # why it is not an event, when event is None

    @property
    def message_id(self) -> str:
        return str(self.message.get("MessageId", ""))

    @property
    def receipt(self) -> str:
        return str(self.message.get("ReceiptHandle", ""))

    @property
    def receive_count(self) -> str:
        return str(self.message.get("Attributes", {}).get("ApproximateReceiveCount", ""))


class FleetWatcher:
    """The consumer loop. Clients, hook planning, the runner and the clock are passed in."""

    def __init__(
        self,
        settings: WatchSettings,
        *,
        sqs: Any,
        tags: InstanceTags,
        stop: StopFlag,
        plan: Callable[[Path], HookPlan],
        runner: Callable[..., list[HookResult]],
        workdir: Path,
        out: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.settings = settings
        self._metrics = metrics if metrics is not None else FleetMetrics()  # counts only
        self._sqs = sqs
        self._tags = tags
        self._stop = stop
        self._plan = plan
        self._runner = runner
        self._workdir = workdir
        self._out = out if out is not None else sys.stdout
        self._environ = environ if environ is not None else os.environ
        self._clock = clock
        self._log = log if log is not None else get_logger()
        self._seen = SeenEvents()
        self._pending_deletes: list[_Received] = []
        self._pending_since = 0.0
        self._visibility = settings.visibility_timeout
        self._last_plan_warnings: tuple[Any, ...] | None = None
        self._receive_fault: str | None = None
        self._print_failed = False
        self.counts: dict[str, int] = {
            k: 0 for k in (DONE, FAILED, DUPLICATE, BAD, IGNORED, LOST)
        }

    @property
    def handled(self) -> int:
        return sum(self.counts.values())

    # -- the loop -------------------------------------------------------------------
    def start(self) -> None:
        """Check the queue is there and learn its visibility timeout; fail fast if not."""
        try:
            attrs = self._sqs.get_queue_attributes(
                QueueUrl=self.settings.queue_url,
                AttributeNames=["VisibilityTimeout", "RedrivePolicy", "QueueArn"],
            )["Attributes"]
        except Exception as exc:  # any failure here is the operator's to fix
            raise SpotwatchError(
                f"cannot use queue {self.settings.queue_url}: {_error_text(exc)} "
                "(check the URL, the region, and the IAM policy for 'fleet watch')"
            ) from None
        if self._visibility is None:
            self._visibility = int(attrs.get("VisibilityTimeout", "30"))
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
        )

    def run(self) -> int:
        self.start()
        try:
            while not self._stop.is_set() and not self._enough():
                batch = self._receive()
                self._handle_batch(batch)
        finally:
            self._flush_deletes()
        self._log.info("fleet.stopped", reason=self._stop_reason(), **self.counts)
        return 0

    def _enough(self) -> bool:
        limit = self.settings.max_messages
        return limit is not None and self.handled >= limit

    def _stop_reason(self) -> str:
        if self._stop.is_set():
            return "signal"
        return "max-messages" if self._enough() else "done"

    def _receive(self) -> list[_Received]:
        want = MAX_BATCH
        if self.settings.max_messages is not None:
            want = min(want, self.settings.max_messages - self.handled)
        request: dict[str, Any] = {
            "QueueUrl": self.settings.queue_url,
            "MaxNumberOfMessages": max(1, want),
            "WaitTimeSeconds": self.settings.wait_seconds,
            "AttributeNames": ["ApproximateReceiveCount"],
        }
        if self.settings.visibility_timeout is not None:
            request["VisibilityTimeout"] = self.settings.visibility_timeout
        delay = 1.0
        while not self._stop.is_set():
            asked = self._clock()  # SQS hides the messages from about now
            try:
                response = self._sqs.receive_message(**request)
            except Exception as exc:  # log once, back off, keep watching
                self._metrics.receive_failed()
                text = _error_text(exc)
                if text != self._receive_fault:
                    self._log.error("fleet.receive_failed", error=text, retry_in=delay,
                                    queue_url=self.settings.queue_url)
                    self._receive_fault = text
                self._stop.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            if self._receive_fault is not None:
                self._log.info("fleet.receive_recovered", queue_url=self.settings.queue_url)
                self._receive_fault = None
            hidden_until = asked + (self._visibility or 0)
            self._metrics.receive_ok(len(response.get("Messages", [])))
            return [self._parse(m, hidden_until) for m in response.get("Messages", [])]
        return []

    @staticmethod
    def _parse(message: dict[str, Any], hidden_until: float) -> _Received:
        try:
            event = parse_message(str(message.get("Body", "")))
        except NotAnEvent as exc:
            return _Received(message, hidden_until, None, exc.reason)
        return _Received(message, hidden_until, event, "")

    def _handle_batch(self, batch: list[_Received]) -> None:
        self._tags.prefetch(
            (r.event.region, r.event.instance_id)
            for r in batch
            if r.event is not None and r.event.actionable and r.event.event_id not in self._seen
        )
        for index, item in enumerate(batch):
            if self._stop.is_set():
                self._release(batch[index:])
                break
            self._metrics.started()
            try:
                outcome = self.handle(item)
            except Exception:  # a bug or a full disk must not stop the fleet's watcher
                self._log.exception("fleet.handle_failed", message_id=item.message_id,
                                    note="left in the queue for redelivery")
                outcome = FAILED
            self.counts[outcome] += 1
            self._metrics.finished(outcome)
        self._flush_deletes()

    # -- one message --------------------------------------------------------------------
    def handle(self, item: _Received) -> str:
        event = item.event
        log = self._log.bind(message_id=item.message_id)
        if event is None:
            log.warning("fleet.bad_message", reason=item.problem,
                        receive_count=item.receive_count, body=_excerpt(item.message))
            return BAD
        log = log.bind(event_id=event.event_id)
        if not event.actionable:
            log.info("fleet.ignored", source=event.source, detail_type=event.detail_type,
                     reason="not an EC2 event type spotwatch acts on")
            self._delete(item)
            return IGNORED
        if event.event_id in self._seen:
            log.info("fleet.duplicate", instance_id=event.instance_id, kind=event.kind,
                     note="already acted on by this watcher; deleted without running hooks")
            self._delete(item)
            return DUPLICATE
        tags = self._tags.get(event.region, event.instance_id)
        self._print(event, tags)
        fields = {"kind": event.kind, "action": event.action, "instance_id": event.instance_id,
                  "region": event.region, "event_time": event.time}
        if event.problem:
            fields["problem"] = event.problem
        log.info("fleet.event", receive_count=item.receive_count, **fields)
        if self.settings.hooks_dir is None:
            self._seen.add(event.event_id)
            self._delete(item)
            return DONE
        return self._run_hooks(item, event, tags, log)

    def _run_hooks(self, item: _Received, event: FleetEvent, tags: Mapping[str, str],
                   log: Any) -> str:
        assert self.settings.hooks_dir is not None
        plan = self._plan(self.settings.hooks_dir)
        self._log_plan(plan)
        if self._pending_deletes and self._clock() - self._pending_since > DELETE_DELAY:
            self._flush_deletes()  # never hold a success back long behind slow hooks
        per_hook = self.settings.hook_timeout + self.settings.kill_grace + HOLD_MARGIN
        lost: list[bool] = []

        def lost_it() -> bool:
            # Asked before each hook: keep the message hidden from other watchers
            # for that hook's worst case, or stop if it is no longer ours.
            if not lost and not self._hold(item, per_hook, log):
                lost.append(True)
            return bool(lost)

        started = self._clock()
        path = self._workdir / f"{_safe_name(event.event_id)}.json"
        try:
            # Recreated if a /tmp cleaner removed it during a quiet week.
            self._workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_text(event.body, encoding="utf-8")
        except OSError as exc:
            log.error("fleet.event_file_failed", path=str(path), error=str(exc),
                      note="hooks not run; left in the queue for redelivery")
            self._set_visibility(item, self._visibility or 0, log)
            return FAILED
        try:
            env = hook_environment(self._environ, event, tags, str(path))
            results = self._runner(
                plan.hooks,
                env,
                deadline_mono=None,
                hook_timeout=self.settings.hook_timeout,
                kill_grace=self.settings.kill_grace,
                # Finish the message in hand: a stop request does not cut its hooks
                # short; only losing the message to another watcher does.
                should_stop=lost_it,
                log=log,
            )
        finally:
            _unlink(path)
        self._metrics.hook_results(results)
        failed = [f"{r.name}: {r.description}" for r in results if not r.ok]
        refused = [f"{r.name}: {r.reason}" for r in plan.rejected if r.severity == REFUSED]
        if plan.problem:
            refused.insert(0, plan.problem)
        duration = round(self._clock() - started, 3)
        if lost:
            return LOST
        if failed or refused or len(results) < len(plan.hooks):
            retry_in = self._visibility or 0
            log.warning("fleet.hooks_failed", failed=failed, refused=refused,
                        hooks=len(results), duration=duration, retry_in=retry_in,
                        receive_count=item.receive_count,
                        note="left in the queue for redelivery")
            self._set_visibility(item, retry_in, log)
            return FAILED
        self._seen.add(event.event_id)
        self._delete(item)
        log.info("fleet.handled", hooks=len(results), duration=duration)
        return DONE

    def _log_plan(self, plan: HookPlan) -> None:
        warnings = (plan.problem, *plan.warnings)
        if warnings == self._last_plan_warnings:
            return  # said once; not again for every event
        self._last_plan_warnings = warnings
        if plan.problem:
            self._log.error("hooks.refused", directory=str(plan.directory),
                            problem=plan.problem, fix=plan.fix)
        for item in plan.warnings:
            level = self._log.error if item.severity == REFUSED else self._log.warning
            level(f"hook.{item.severity}", hook=item.name, reason=item.reason, fix=item.fix)

    def _print(self, event: FleetEvent, tags: Mapping[str, str]) -> None:
        if self.settings.json_output:
            line = json.dumps(event_record(event, tags), sort_keys=False)
        else:
            line = event_line(event, tags)
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (OSError, ValueError) as exc:
            if not self._print_failed:
                self._print_failed = True
                self._log.warning("fleet.print_failed", error=str(exc),
                                  note="events are still acted on; see the log")

    # -- SQS bookkeeping --------------------------------------------------------------
    def _hold(self, item: _Received, seconds: float, log: Any) -> bool:
        """Make sure ``item`` stays invisible to other watchers for ``seconds`` more."""
        now = self._clock()
        if item.hidden_until - now >= seconds:
            return True
        wanted = int(min(MAX_VISIBILITY_TIMEOUT, seconds + 1))
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.settings.queue_url,
                ReceiptHandle=item.receipt,
                VisibilityTimeout=wanted,
            )
        except Exception as exc:
            log.warning("fleet.lost_message", error=_error_text(exc),
                        note="its visibility timeout ran out before its turn; "
                        "another watcher has it or will")
            return False
        item.hidden_until = now + wanted
        return True

    def _set_visibility(self, item: _Received, seconds: int, log: Any) -> None:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.settings.queue_url,
                ReceiptHandle=item.receipt,
                VisibilityTimeout=seconds,
            )
        except Exception as exc:  # it comes back anyway when its timeout ends
            log.warning("fleet.visibility_failed", error=_error_text(exc))

    def _release(self, items: Sequence[_Received]) -> None:
        """Hand messages not yet started back to the queue, visible at once."""
        entries = [
            {"Id": str(i), "ReceiptHandle": r.receipt, "VisibilityTimeout": 0}
            for i, r in enumerate(items)
        ]
        if not entries:
            return
        try:
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.settings.queue_url, Entries=entries
            )
        except Exception as exc:
            self._log.warning("fleet.release_failed", error=_error_text(exc), count=len(items),
                              note="they come back when their visibility timeout ends")
            return
        self._log.info("fleet.released", count=len(items), reason="stopping")

    def _delete(self, item: _Received) -> None:
        if not self._pending_deletes:
            self._pending_since = self._clock()
        self._pending_deletes.append(item)
        if len(self._pending_deletes) >= MAX_BATCH:
            self._flush_deletes()

    def _flush_deletes(self) -> None:
        items, self._pending_deletes = self._pending_deletes, []
        if not items:
            return
        entries = [{"Id": str(i), "ReceiptHandle": r.receipt} for i, r in enumerate(items)]
        try:
            response = self._sqs.delete_message_batch(
                QueueUrl=self.settings.queue_url, Entries=entries
            )
        except Exception as exc:  # the messages come back; the LRU skips them
            self._log.warning("fleet.delete_failed", error=_error_text(exc),
                              message_ids=[r.message_id for r in items])
            return
        for failure in response.get("Failed", []):
            item = items[int(failure.get("Id", 0))]
            self._log.warning("fleet.delete_failed", message_id=item.message_id,
                              error=f"{failure.get('Code')}: {failure.get('Message', '')}")


def watch(
    settings: WatchSettings, *, region: str | None = None, metrics_file: Path | None = None
) -> int:
    """``spotwatch fleet watch``: real clients, signals and a scratch directory."""
    check_settings(settings)
    recorder = None
    if metrics_file is not None:
        from spotwatch.metrics import MetricsFile, check_path

        recorder = FleetMetrics(MetricsFile(check_path(metrics_file)))
    from spotwatch import hooks, runner
    from spotwatch.stopper import Stopper

    if settings.hooks_dir is not None:
        plan = hooks.plan_hooks(settings.hooks_dir)
        if plan.problem:
            raise UsageError(f"{plan.problem}: {plan.fix}")

    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    region = region or region_from_queue_url(settings.queue_url) or session.region_name
    if not region:
        raise UsageError("no region: pass --region or set AWS_DEFAULT_REGION")
    config = Config(retries={"mode": "standard", "max_attempts": 3},
                    read_timeout=settings.wait_seconds + 15)
    sqs = session.client("sqs", region_name=region, config=config)
    ec2_clients: dict[str, Any] = {}

    def ec2_for(event_region: str) -> Any:
        if event_region not in ec2_clients:
            ec2_clients[event_region] = session.client(
                "ec2", region_name=event_region, config=Config(retries={"mode": "standard"})
            )
        return ec2_clients[event_region]

    from spotwatch.install import environ_for_hooks

    environ = environ_for_hooks(os.environ)

    stop = Stopper()
    stop.install()
    workdir = Path(tempfile.mkdtemp(prefix="spotwatch-fleet-"))
    try:
        watcher = FleetWatcher(
            settings,
            sqs=sqs,
            tags=InstanceTags(ec2_for),
            stop=stop,
            plan=hooks.plan_hooks,
            runner=runner.run_hooks,
            workdir=workdir,
            environ=environ,
            metrics=recorder,
        )
        return watcher.run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        stop.close()


def _error_text(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _excerpt(message: Mapping[str, Any], limit: int = 200) -> str:
    body = str(message.get("Body", ""))
    return body if len(body) <= limit else body[:limit] + "..."


def _safe_name(event_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", event_id)[:100] or "event"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
