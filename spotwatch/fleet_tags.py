"""Instance names and tags for ``fleet watch``: read for a whole region at once
at start and in a wave, otherwise looked up in batches; cached either way.

- A snapshot is one paginated DescribeTags of every instance's tags in a region
  (1,000 a page, at most :data:`SNAPSHOT_PAGES` pages), on a thread of its own.
  The watcher takes one of the queue's region when it starts, and another of a
  region once that region needed :data:`SNAPSHOT_AFTER` per-batch calls within
  :data:`SNAPSHOT_WINDOW` seconds (a wave) and its last snapshot expired. EC2
  throttles its API per account and region, and the account's other tools (an
  autoscaler, a scheduler) share that budget exactly when a wave comes: 2,000
  warnings then cost a few calls, not 200, and a watcher started into a wave
  (the way to add capacity) has its region's tags from the start. While a
  region's snapshot is under way, new lookups in it wait for it, at most
  :data:`SNAPSHOT_HOLD` seconds.
- Per batch: one DescribeInstances per region for the instances in hand that
  are not cached (an instance without tags is absent from a snapshot). Ids go in
  a filter, so an instance EC2 does not know is simply absent; it is cached for
  a shorter time, as it may yet appear.
- DescribeTags denied, or a region with more tags than the pages allowed:
  logged once, and that region stays on per-batch lookups for
  :data:`SNAPSHOT_RETRY` seconds (after another error, such as throttling, for
  :data:`SNAPSHOT_WINDOW` seconds).

Tags are decoration: no failure here ever fails an event.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from spotwatch.clocks import SYSTEM, Clocks
from spotwatch.ec2_lookup import describe_instances
from spotwatch.errors import aws_error_text
from spotwatch.logs import get_logger

TAGS_TTL = 300.0
UNKNOWN_TAGS_TTL = 60.0  # an instance DescribeInstances did not know may appear soon
TAGS_WAIT = 5.0  # seconds a worker waits for its instance's tags before going on without
SNAPSHOT_AFTER = 3  # per-batch calls for one region within SNAPSHOT_WINDOW: a wave
SNAPSHOT_WINDOW = 60.0
SNAPSHOT_PAGES = 20  # 20,000 tags; a bigger region stays on per-batch lookups
SNAPSHOT_PAGE_SIZE = 1000  # DescribeTags' own limit
SNAPSHOT_RETRY = 3600.0  # after a denied or oversized snapshot
SNAPSHOT_HOLD = 2.0  # seconds new lookups in a region wait for its snapshot under way
CACHE_PRUNE_AT = 50000
DENIED = ("UnauthorizedOperation", "AccessDenied")  # error codes: a permission missing


class Tags(Protocol):
    """What :class:`TagLookup` needs of a tag source."""

    def prefetch(self, wanted: Iterable[tuple[str, str]]) -> None: ...

    def peek(self, region: str, instance_id: str) -> dict[str, str] | None: ...

    def snapshot_due(self) -> list[str]: ...

    def snapshot(self, region: str) -> None: ...


def lookable(region: str, instance_id: str) -> bool:
    """Whether EC2 could know this instance."""
    return region != "unknown" and instance_id.startswith("i-")


@dataclass(frozen=True)
class TagTuning:
    """How long tags are cached, and when and how far a region is read whole."""

    ttl: float = TAGS_TTL
    unknown_ttl: float = UNKNOWN_TAGS_TTL
    snapshot_after: int = SNAPSHOT_AFTER
    snapshot_window: float = SNAPSHOT_WINDOW
    snapshot_pages: int = SNAPSHOT_PAGES
    snapshot_retry: float = SNAPSHOT_RETRY
    page_size: int = SNAPSHOT_PAGE_SIZE


DEFAULT_TUNING = TagTuning()


class InstanceTags:
    """Instance tags by region and id, cached; EC2 clients come from ``client_for_region``.

    ``prefetch`` and ``snapshot_due`` are called from one thread (``TagLookup``'s),
    ``snapshot`` from a thread of its own, ``peek`` from any.
    """

    def __init__(
        self,
        client_for_region: Callable[[str], Any],
        *,
        tuning: TagTuning = DEFAULT_TUNING,
        warm: Iterable[str] = (),
        clocks: Clocks = SYSTEM,
    ) -> None:
        self._client_for_region = client_for_region
        self._ttl = tuning.ttl
        self._unknown_ttl = tuning.unknown_ttl
        self._snapshot_after = tuning.snapshot_after
        self._snapshot_window = tuning.snapshot_window
        self._snapshot_pages = tuning.snapshot_pages
        self._snapshot_retry = tuning.snapshot_retry
        self._page_size = tuning.page_size
        self._clock = clocks.monotonic
        self._log = clocks.logger()
        self._lock = threading.Lock()  # guards the writes below; peek reads without it
        self._cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._failing: set[str] = set()
        self._recent: dict[str, deque[float]] = {}  # per-batch call times by region
        self._next_snapshot: dict[str, float] = {}  # region: not before this
        self._snapshotting: set[str] = set()
        self._snapshot_refused: set[str] = set()  # said once per region
        self._warm = list(warm)  # regions to read at start, wave or not
        self.calls = 0  # every EC2 call: per-batch ones and snapshot pages
        self.snapshots = 0

    # -- per batch -----------------------------------------------------------------------
    def prefetch(self, wanted: Iterable[tuple[str, str]]) -> None:
        """Look up every (region, instance id) not cached or expired, one call per region."""
        now = self._clock()
        by_region: dict[str, set[str]] = {}
        for region, instance_id in wanted:
            if not lookable(region, instance_id):
                continue
            hit = self._cache.get((region, instance_id))
            if hit is None or hit[0] <= now:
                by_region.setdefault(region, set()).add(instance_id)
        for region, ids in by_region.items():
            self._recent.setdefault(region, deque(maxlen=self._snapshot_after)).append(now)
            self._fetch(region, sorted(ids))

    def peek(self, region: str, instance_id: str) -> dict[str, str] | None:
        """The cached tags, fresh ones only; None when a lookup is needed. Never calls."""
        if not lookable(region, instance_id):
            return {}
        hit = self._cache.get((region, instance_id))
        if hit is None or hit[0] <= self._clock():
            return None
        return dict(hit[1])

    def get(self, region: str, instance_id: str) -> dict[str, str]:
        hit = self.peek(region, instance_id)
        if hit is None:
            self.prefetch([(region, instance_id)])
            hit = self.peek(region, instance_id)
        return hit if hit is not None else {}

    def _fetch(self, region: str, ids: Sequence[str]) -> None:
        found: dict[str, dict[str, str]] = {}
        try:
            client = self._client_for_region(region)
            instances, calls = describe_instances(client, ids)
            with self._lock:
                self.calls += calls
            for instance_id, instance in instances.items():
                found[instance_id] = {
                    str(t.get("Key", "")): str(t.get("Value", "")) for t in instance.get("Tags", [])
                }
        except Exception as exc:  # tags are decoration, never a failure
            level = self._log.debug if region in self._failing else self._log.warning
            self._failing.add(region)
            level(
                "fleet.tags_failed",
                region=region,
                error=aws_error_text(exc),
                advice="grant ec2:DescribeInstances to show instance tags",
            )
            expires = self._clock() + self._unknown_ttl
            with self._lock:
                for instance_id in ids:
                    self._cache[(region, instance_id)] = (expires, {})
            return
        self._failing.discard(region)
        now = self._clock()
        with self._lock:
            for instance_id in ids:
                tags = found.get(instance_id)
                if tags is None:
                    self._cache[(region, instance_id)] = (now + self._unknown_ttl, {})
                else:
                    self._cache[(region, instance_id)] = (now + self._ttl, tags)
            if len(self._cache) > CACHE_PRUNE_AT:  # a long-running watcher: drop what expired
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}

    # -- a whole region at once -----------------------------------------------------------
    def snapshot_due(self) -> list[str]:
        """Regions in a wave and due a snapshot; each returned is claimed (call ``snapshot``)."""
        now = self._clock()
        due = []
        with self._lock:
            for region in self._warm:
                if region not in self._snapshotting:
                    self._snapshotting.add(region)
                    due.append(region)
            self._warm = []
            for region, times in self._recent.items():
                if (region not in due and len(times) >= self._snapshot_after
                        and now - times[0] <= self._snapshot_window
                        and region not in self._snapshotting
                        and now >= self._next_snapshot.get(region, 0.0)):
                    self._snapshotting.add(region)
                    due.append(region)
        return due

    def snapshot(self, region: str) -> None:
        """Every instance's tags in ``region`` into the cache (DescribeTags, paginated)."""
        started = self._clock()
        found: dict[str, dict[str, str]] = {}
        pages = 0
        try:
            client = self._client_for_region(region)
            token = None
            while True:
                if pages >= self._snapshot_pages:
                    self._snapshot_skipped(
                        region, started, reason=f"more than {pages * self._page_size} tags",
                        advice="lookups stay one DescribeInstances per batch in this region")
                    return
                request: dict[str, Any] = {
                    "Filters": [{"Name": "resource-type", "Values": ["instance"]}],
                    "MaxResults": self._page_size,
                }
                if token:
                    request["NextToken"] = token
                page = client.describe_tags(**request)
                pages += 1
                for tag in page.get("Tags", []):
                    instance_tags = found.setdefault(str(tag.get("ResourceId", "")), {})
                    instance_tags[str(tag.get("Key", ""))] = str(tag.get("Value", ""))
                token = page.get("NextToken")
                if not token:
                    break
        except Exception as exc:  # tags are decoration, never a failure
            reason = aws_error_text(exc)
            if reason.startswith(DENIED):
                self._snapshot_skipped(
                    region, started, reason=reason,
                    advice="grant ec2:DescribeTags so that a wave costs a few calls per "
                    "region rather than one per batch")
            else:  # throttled, or EC2 unreachable: not for long
                self._snapshot_skipped(
                    region, started, reason=reason, retry=self._snapshot_window,
                    advice="lookups stay one DescribeInstances per batch meanwhile")
            return
        finally:
            with self._lock:
                self.calls += pages
                self._snapshotting.discard(region)
        # Counted from the start: a tag changed while the pages came may be missed.
        expires = started + self._ttl
        with self._lock:
            for instance_id, tags in found.items():
                self._cache[(region, instance_id)] = (expires, tags)
            self._next_snapshot[region] = expires
            self.snapshots += 1
        self._log.info("fleet.tags_snapshot", region=region, instances=len(found), pages=pages,
                       seconds=round(self._clock() - started, 3))

    def _snapshot_skipped(self, region: str, started: float, *, reason: str, advice: str,
                          retry: float | None = None) -> None:
        retry = self._snapshot_retry if retry is None else retry
        with self._lock:
            self._next_snapshot[region] = started + retry
            first = region not in self._snapshot_refused
            self._snapshot_refused.add(region)
        (self._log.warning if first else self._log.debug)(
            "fleet.tags_snapshot_skipped", region=region, reason=reason, advice=advice,
            retry_in=retry)


class NoTags:
    """``--no-tags``: every instance has none, and EC2 is never asked."""

    calls = 0

    def prefetch(self, wanted: Iterable[tuple[str, str]]) -> None:
        pass

    def peek(self, region: str, instance_id: str) -> dict[str, str]:
        return {}

    def snapshot_due(self) -> list[str]:
        return []

    def snapshot(self, region: str) -> None:
        pass


class TagLookup:
    """Tags for the messages in hand, looked up on a thread of their own.

    ``want`` queues instances (the receiver, as messages arrive); the thread
    takes everything queued at once and makes one ``prefetch`` of it, then
    starts any region snapshot due on a thread of its own; while one is under
    way, that region's new lookups wait for it (at most ``snapshot_hold`` s). ``get`` waits only
    until its own instance is known (or ``wait`` seconds), so a worker whose tags
    are cached never waits behind another region's slow call.
    """

    def __init__(self, tags: Tags, *, snapshot_hold: float = SNAPSHOT_HOLD,
                 log: Any = None) -> None:
        self.tags = tags
        self._snapshot_hold = snapshot_hold
        self._snapshotting: dict[str, float] = {}  # region: when its snapshot started
        self._log = log if log is not None else get_logger()
        self._cv = threading.Condition()
        self._queued: set[tuple[str, str]] = set()
        self._asked: set[tuple[str, str]] = set()  # queued or being looked up
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fleet-tags", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def want(self, keys: Iterable[tuple[str, str]]) -> None:
        with self._cv:
            for key in keys:
                if key not in self._asked and self.tags.peek(*key) is None:
                    self._queued.add(key)
                    self._asked.add(key)
            if self._queued:
                self._cv.notify_all()

    def get(self, region: str, instance_id: str, wait: float = TAGS_WAIT) -> dict[str, str]:
        hit: dict[str, str] | None = self.tags.peek(region, instance_id)
        if hit is not None:
            return hit
        key = (region, instance_id)
        end = time.monotonic() + wait
        with self._cv:
            while True:
                hit = self.tags.peek(region, instance_id)
                if hit is not None:
                    return hit
                if key not in self._asked:
                    self._queued.add(key)
                    self._asked.add(key)
                    self._cv.notify_all()
                left = end - time.monotonic()
                if left <= 0 or self._closed or not self._thread.is_alive():
                    return {}
                self._cv.wait(left)

    def _loop(self) -> None:
        self._start_snapshots()  # a region to read at start (``warm``)
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    batch, held_for = self._take_batch(time.monotonic())
                    if batch:
                        break
                    self._cv.wait(held_for)  # None: until something is queued
            try:
                self.tags.prefetch(sorted(batch))
            except Exception:  # InstanceTags never raises; a bug must not stall the workers
                self._log.exception("fleet.tags_failed", note="events go on without tags")
            with self._cv:
                self._asked -= batch
                self._cv.notify_all()
            self._start_snapshots()

    def _start_snapshots(self) -> None:
        try:
            due = self.tags.snapshot_due()
        except Exception:  # InstanceTags never raises; a bug must not stall the workers
            self._log.exception("fleet.tags_failed", note="events go on with per-batch lookups")
            return
        for region in due:
            with self._cv:
                self._snapshotting[region] = time.monotonic()
            threading.Thread(target=self._snapshot, args=(region,),
                             name=f"fleet-tags-{region}", daemon=True).start()

    def _take_batch(self, now: float) -> tuple[set[tuple[str, str]], float | None]:
        """What to look up now, and how long the rest may wait (None: nothing waits).

        Instances of a region whose snapshot is under way wait for it (at most
        ``snapshot_hold`` seconds from its start): it most likely has them, and a
        call for them now would only compete with it. Called under ``_cv``.
        """
        held: set[tuple[str, str]] = set()
        wait: float | None = None
        for key in self._queued:
            since = self._snapshotting.get(key[0])
            if since is not None and now - since < self._snapshot_hold:
                held.add(key)
                left = since + self._snapshot_hold - now
                wait = left if wait is None else min(wait, left)
        batch = self._queued - held
        self._queued = held
        return batch, wait

    def _snapshot(self, region: str) -> None:
        try:
            self.tags.snapshot(region)
        except Exception:  # InstanceTags never raises; a bug must not stall the workers
            self._log.exception("fleet.tags_failed", region=region,
                                note="events go on with per-batch lookups")
        with self._cv:
            self._snapshotting.pop(region, None)
            self._cv.notify_all()  # waiting workers may find their tags; held lookups go on
