"""Prometheus metrics in a file for node_exporter's textfile collector (``--metrics-file``).

node_exporter (``--collector.textfile.directory=DIR``) reads every ``DIR/*.prom``
at each scrape and serves its samples with its own. spotwatch rewrites its file
after polls and as hooks start and end: rendered here, written to a temp file in
the same directory, renamed over the old one, so a scrape sees the old file or
the new one, never a part.

Written by hand rather than with ``prometheus_client``: the text format is a
few lines per metric, and only importing the client took the idle daemon to
35.6 MiB peak RSS, over its 35 MiB goal (``bench/idle.py --prometheus-client``);
its writes also cost three to twenty times this module's CPU (README
"Metrics"). ``render`` is a pure function of plain data; the recorders turn
the watcher's events into that data.

Every poll changes the poll counter and the last successful poll's time, but
nobody reads those between scrapes: a poll that changed nothing else is written
only if the last write is ROUTINE_WRITE_PERIOD old. Because the file holds the
*time* of the last successful poll (not a running "seconds since", which would
differ at every write), ``time() - spotwatch_last_successful_poll_timestamp_seconds``
is right at any moment, also once the daemon is dead and the file goes stale.
No fsync: readers see whole files through the rename either way, and after a
power loss the counters start again from zero anyway.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spotwatch import __version__
from spotwatch.atomicfile import remove_stale_temps, write_atomically
from spotwatch.errors import UsageError
from spotwatch.logs import get_logger

SUFFIX = ".prom"  # the textfile collector reads only these
EXAMPLE_PATH = "/var/lib/node_exporter/textfile_collector/spotwatch.prom"
# Hooks run from well under a second to the whole two minutes.
HOOK_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# AWS issues the spot interruption notice two minutes before its time.
SPOT_NOTICE_LEAD = 120.0
# A poll that only moves the poll counter and the success time is written at
# most this often (node_exporter is scraped every 15 s or more, and a new file
# costs an inode: ~15 us on tmpfs, up to ~1 ms of CPU on some ext4 mounts);
# anything else (a fault starts or goes on, a notice, a hook) is written at once.
ROUTINE_WRITE_PERIOD = 15.0
# The fleet watcher writes at once after a quiet spell, then at most this often:
# in a wave it handles hundreds of messages a second, and a rewrite per message
# took 0.4 ms of CPU per event and a fifth of its rate (bench/fleet.py).
FLEET_WRITE_PERIOD = 1.0

Labels = tuple[tuple[str, str], ...]


# -- the text format ------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    suffix: str  # "" or _bucket, _sum, _count
    labels: Labels
    value: float


@dataclass(frozen=True)
class Family:
    name: str  # counters end in _total
    kind: str  # counter, gauge or histogram
    help: str
    samples: tuple[Sample, ...] = ()


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render(families: Iterable[Family]) -> str:
    """Prometheus text exposition format 0.0.4; a family with no samples keeps HELP and TYPE."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            if sample.labels:
                inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in sample.labels)
                labels = "{" + inner + "}"
            else:
                labels = ""
            lines.append(f"{family.name}{sample.suffix}{labels} {format_value(sample.value)}")
    lines.append("")
    return "\n".join(lines)


class Histogram:
    """Observations counted into fixed buckets, rendered cumulatively with ``le``."""

    def __init__(self, buckets: Sequence[float] = HOOK_DURATION_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def samples(self, labels: Labels = ()) -> list[Sample]:
        out: list[Sample] = []
        running = 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(Sample("_bucket", (*labels, ("le", format_value(bound))), running))
        out.append(Sample("_bucket", (*labels, ("le", "+Inf")), self.count))
        out.append(Sample("_sum", labels, self.total))
        out.append(Sample("_count", labels, self.count))
        return out


def _counter_samples(counts: Mapping[Labels, float]) -> tuple[Sample, ...]:
    return tuple(Sample("", labels, value) for labels, value in sorted(counts.items()))


def _build_info() -> Family:
    python = ".".join(str(p) for p in sys.version_info[:3])
    return Family(
        "spotwatch_build_info",
        "gauge",
        "Always 1; the labels say which spotwatch and Python run.",
        (Sample("", (("version", __version__), ("python", python)), 1),),
    )


# -- the file -------------------------------------------------------------------------
def check_path(path: Path, flag: str = "--metrics-file") -> Path:
    """The absolute metrics path, or a one-line UsageError saying what to do."""
    path = path.absolute()
    if not path.name.endswith(SUFFIX):
        raise UsageError(
            f"{flag} {path}: node_exporter's textfile collector reads only *{SUFFIX} files; "
            f"name it like {EXAMPLE_PATH}"
        )
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; name a file in it, e.g. "
                         f"{path / 'spotwatch.prom'}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"{flag}: directory {parent} does not exist: create it (mkdir -p {parent}) "
            "and point node_exporter's --collector.textfile.directory at it"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag}: directory {parent} is not writable by uid {os.geteuid()}: fix its "
            "owner or mode or mount, or under systemd's ProtectSystem=strict add "
            f"ReadWritePaths={parent} in a drop-in"
        )
    return path


def _fix_for(exc: OSError, directory: Path) -> str:
    if exc.errno == errno.ENOENT:
        return f"create the directory (mkdir -p {directory})"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"make {directory} writable by spotwatch; under systemd with "
            f"ProtectSystem=strict add ReadWritePaths={directory} in a drop-in"
        )
    if exc.errno == errno.ENOSPC:
        return "free space on that file system"
    return "check the path and its file system"


class MetricsFile:
    """Atomic rewrites of one file; a failure is logged once (again only if it changes or
    after a success)."""

    def __init__(self, path: Path, *, log: Any = None) -> None:
        self.path = path
        self._log: Any = log if log is not None else get_logger()
        self._last: str | None = None
        self._failing: str | None = None
        self.writes = 0

    def write(self, text: str) -> bool:
        """Replace the file with ``text`` unless it already holds it. False on failure."""
        if text == self._last:
            return True
        try:
            if not self.writes:
                remove_stale_temps(self.path)  # a crash's, or planted
            # 0644: node_exporter runs as another user; the strict unit's UMask=0077
            # would otherwise leave the file readable by root only.
            write_atomically(self.path, text.encode(), 0o644, durable=False)
        except OSError as exc:
            self._failed(exc)
            return False
        if self._failing is not None:
            self._log.info("metrics.write_recovered", path=str(self.path))
            self._failing = None
        self._last = text
        self.writes += 1
        return True

    def _failed(self, exc: OSError) -> None:
        what = exc.strerror or str(exc)
        if what == self._failing:
            return
        self._failing = what
        self._last = None
        self._log.warning(
            "metrics.write_failed",
            path=str(self.path),
            error=what,
            fix=_fix_for(exc, self.path.parent),
            note="logged once; spotwatch keeps watching and tries again at its next write",
        )


# -- spotwatch run --------------------------------------------------------------------
class DaemonMetrics:
    """What ``spotwatch run`` did, from the watcher's listener events; rewrites the file.

    Subscribes with ``listener``; the file is written after a poll that saw a
    fault or its end (other polls: every ``routine_period``), after a hook
    starts (not before: the notice's path to its first hook stays as fast) and
    ends, and once a notice is handled.
    """

    def __init__(
        self,
        out: MetricsFile | None,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        routine_period: float = ROUTINE_WRITE_PERIOD,
    ) -> None:
        self._out = out
        self._wall = wall_clock
        self._clock = clock
        self._routine_period = routine_period
        self._written_at = float("-inf")
        self.started_at = wall_clock()
        self.polls = 0
        self.imds_up: float | None = None
        self.last_ok: float | None = None
        self.last_poll_ok = False
        self.faults: dict[Labels, float] = {}
        self.notices: dict[Labels, float] = {}
        self.handled: dict[Labels, float] = {}
        self.hooks: dict[Labels, float] = {}
        self.durations: dict[str, Histogram] = {}
        self.last_notice_seen: float | None = None
        self.last_notice_latency: float | None = None
        self.last_notice_lead: float | None = None
        self._notice_labels: dict[str, Labels] = {}
        self._head: str | None = None
        self._rest: str | None = None  # rendered notice and hook families; None: stale
        self._broken = False

    def listener(self, event: str, fields: Mapping[str, Any]) -> None:
        """Never raises: a fault in the metrics must not stop the watch loop."""
        try:
            self._on(event, fields)
        except Exception:
            if not self._broken:
                self._broken = True
                get_logger().exception(
                    "metrics.failed", watcher_event=event,
                    note="logged once; spotwatch keeps watching, the metrics may be incomplete",
                )

    def _on(self, event: str, fields: Mapping[str, Any]) -> None:
        if event == "poll.done":
            routine = self._poll(fields)
            if not routine or self._clock() - self._written_at >= self._routine_period:
                self.flush()
            return
        self._rest = None
        if event == "notice.detected":
            self._notice(fields)
            return  # written once its first hook has started
        elif event == "hook.finished":
            result = fields["result"]
            key = (("hook", str(result.name)), ("outcome", str(result.outcome)))
            self.hooks[key] = self.hooks.get(key, 0) + 1
            self.durations.setdefault(result.name, Histogram()).observe(result.duration)
        elif event == "notice.handled":
            labels = self._notice_labels.pop(str(fields.get("notice_id")), None)
            if labels is not None:
                self.handled[labels] = self.handled.get(labels, 0) + 1
        elif event != "hook.started":
            return
        self.flush()

    def _poll(self, fields: Mapping[str, Any]) -> bool:
        """Count the poll; True if it changed nothing but the counter and the success time."""
        routine = self.last_poll_ok
        self.polls += 1
        faults: Sequence[tuple[str, str]] = fields.get("faults", ())
        for source, kind in faults:
            key = (("source", source), ("kind", kind))
            self.faults[key] = self.faults.get(key, 0) + 1
        self.last_poll_ok = not faults
        self.imds_up = 0 if faults else 1
        if not faults:
            self.last_ok = self._wall()
        return routine and self.last_poll_ok

    def _notice(self, fields: Mapping[str, Any]) -> None:
        labels = (("event", str(fields["kind"])), ("action", str(fields["action"])))
        self.notices[labels] = self.notices.get(labels, 0) + 1
        self._notice_labels[str(fields["notice_id"])] = labels
        seen = float(fields.get("seen_at", self._wall()))
        self.last_notice_seen = round(seen, 3)
        self.last_notice_lead = round(float(fields["deadline"]) - seen, 3)
        notice = fields.get("notice")
        self.last_notice_latency = detection_latency(
            str(fields["kind"]), getattr(notice, "time", None), seen
        )

    def flush(self) -> None:
        if self._out is not None:
            self._written_at = self._clock()
            self._out.write(self.text())

    def text(self) -> str:
        """The file's content. Only the poll's lines are rendered at every poll; the rest
        is kept until a notice or hook changes it."""
        if self._head is None:
            self._head = render(self._start_families())
        if self._rest is None:
            self._rest = render(self._notice_families())
        return self._head + render(self._poll_families()) + self._rest

    def families(self) -> list[Family]:
        return [*self._start_families(), *self._poll_families(), *self._notice_families()]

    def _start_families(self) -> list[Family]:
        return [
            _build_info(),
            _gauge("spotwatch_start_time_seconds", "When this spotwatch run started (Unix time).",
                   round(self.started_at, 3)),
        ]

    def _poll_families(self) -> list[Family]:
        if self.last_poll_ok:
            age = 0.0  # as of this write; time() - the timestamp below is the age at any moment
        else:
            since = self.last_ok if self.last_ok is not None else self.started_at
            age = round(self._wall() - since, 3)
        return [
            Family("spotwatch_polls_total", "counter", "Polls of IMDS for notices.",
                   (Sample("", (), self.polls),)),
            Family("spotwatch_imds_faults_total", "counter",
                   "Checks of IMDS that got no usable answer, by source and fault kind.",
                   _counter_samples(self.faults)),
            _gauge("spotwatch_imds_up",
                   "1 if every check of the last poll got an answer from IMDS, else 0.",
                   self.imds_up),
            _gauge("spotwatch_last_successful_poll_timestamp_seconds",
                   "When the last poll without an IMDS fault ended (Unix time; 0: none yet).",
                   round(self.last_ok, 3) if self.last_ok is not None else 0),
            _gauge("spotwatch_last_successful_poll_age_seconds",
                   "Seconds since the last poll without an IMDS fault, as of this file's "
                   "writing (0 while polls succeed).", age),
        ]

    def _notice_families(self) -> list[Family]:
        durations: list[Sample] = []
        for hook, histogram in sorted(self.durations.items()):
            durations.extend(histogram.samples((("hook", hook),)))
        return [
            Family("spotwatch_notices_total", "counter",
                   "Notices detected (a resumed one counts again), by event and action.",
                   _counter_samples(self.notices)),
            Family("spotwatch_notices_handled_total", "counter",
                   "Notices whose hooks all ran to an outcome, by event and action.",
                   _counter_samples(self.handled)),
            Family("spotwatch_hooks_total", "counter", "Hooks run, by hook and outcome.",
                   _counter_samples(self.hooks)),
            Family("spotwatch_hook_duration_seconds", "histogram", "How long each hook ran.",
                   tuple(durations)),
            _gauge("spotwatch_last_notice_timestamp_seconds",
                   "When the last notice was detected (Unix time).", self.last_notice_seen),
            _gauge("spotwatch_last_notice_detection_latency_seconds",
                   "Seconds from the last notice's issue to its detection (spot interruption: "
                   "its time minus 120 s; rebalance: its noticeTime; NaN: unknown).",
                   self.last_notice_latency),
            _gauge("spotwatch_last_notice_lead_seconds",
                   "Seconds the last notice left until its deadline when detected.",
                   self.last_notice_lead),
        ]


def detection_latency(kind: str, notice_time: float | None, seen_at: float) -> float:
    """Seconds from when AWS issued the notice to ``seen_at``; NaN where that is unknown."""
    if notice_time is None:
        return math.nan
    if kind == "spot-interruption":
        issued = notice_time - SPOT_NOTICE_LEAD
    elif kind == "rebalance-recommendation":
        issued = notice_time
    else:
        return math.nan
    return round(max(0.0, seen_at - issued), 3)


def _gauge(name: str, help: str, value: float | None) -> Family:
    samples = () if value is None else (Sample("", (), value),)
    return Family(name, "gauge", help, samples)


# -- spotwatch fleet watch ------------------------------------------------------------
FLEET_HANDLED = ("done", "failed", "duplicate", "bad", "ignored", "lost")


class FleetMetrics:
    """What ``spotwatch fleet watch`` did; thread-safe (workers may report at once).

    The fleet watcher calls ``receive_ok`` or ``receive_failed`` after each
    ReceiveMessage, ``started``/``finished`` around each message and
    ``hook_results`` with each message's hook results. Without a file it only
    counts. A change is written at once if the last write is ``write_period``
    old, else by the next ``flush`` after that.
    """

    def __init__(
        self,
        out: MetricsFile | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        write_period: float = FLEET_WRITE_PERIOD,
    ) -> None:
        self._out = out
        self._wall = wall_clock
        self._clock = clock
        self._write_period = write_period
        self._written_at: float | None = None
        self._dirty = False  # changed since the last write, which was too recent
        self._lock = threading.Lock()
        self.started_at = wall_clock()
        self.receives = 0
        self.receive_errors = 0
        self.received = 0
        self.last_receive: float | None = None
        self.in_flight = 0
        self.handled: dict[Labels, float] = {(("outcome", o),): 0 for o in FLEET_HANDLED}
        self.hooks: dict[Labels, float] = {}
        self.durations: dict[str, Histogram] = {}
        self._broken = False

    def receive_ok(self, messages: int) -> None:
        with self._lock:
            self.receives += 1
            self.received += messages
            self.last_receive = self._wall()
            self._flush()

    def receive_failed(self) -> None:
        with self._lock:
            self.receive_errors += 1
            self._flush()

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self._flush()

    def finished(self, outcome: str, *, started: bool = True) -> None:
        """One message dealt with; ``started=False`` for one lost before a worker took it."""
        with self._lock:
            if started:
                self.in_flight -= 1
            key = (("outcome", outcome),)
            self.handled[key] = self.handled.get(key, 0) + 1
            self._flush()

    def hook_results(self, results: Iterable[Any]) -> None:
        """Count HookResults; written with the message's ``finished``."""
        with self._lock:
            for result in results:
                key = (("hook", str(result.name)), ("outcome", str(result.outcome)))
                self.hooks[key] = self.hooks.get(key, 0) + 1
                self.durations.setdefault(result.name, Histogram()).observe(result.duration)

    def flush(self, *, force: bool = False) -> None:
        """Write what changed since the last write, once it is ``write_period`` old
        (``force``: now). The watcher's book-keeper calls it every tick, and at the end."""
        with self._lock:
            if self._dirty and (force or self._write_due()):
                self._write()

    def _write_due(self) -> bool:
        return (self._written_at is None
                or self._clock() - self._written_at >= self._write_period)

    def _flush(self) -> None:
        """After a change (under the lock): write now, or mark it for ``flush``."""
        if self._out is None:
            return
        if self._write_due():
            self._write()
        else:
            self._dirty = True

    def _write(self) -> None:
        # Never raises: the callers are the fleet watcher's receiver and workers, and a
        # worker that died here would leave its message in hand for good.
        assert self._out is not None
        self._dirty = False
        self._written_at = self._clock()
        try:
            self._out.write(render(self.families()))
        except Exception:
            if not self._broken:
                self._broken = True
                get_logger().exception(
                    "metrics.failed",
                    note="logged once; spotwatch keeps watching, the metrics may be incomplete",
                )

    def families(self) -> list[Family]:
        durations: list[Sample] = []
        for hook, histogram in sorted(self.durations.items()):
            durations.extend(histogram.samples((("hook", hook),)))
        return [
            _build_info(),
            _gauge("spotwatch_fleet_start_time_seconds",
                   "When this fleet watcher started (Unix time).", self.started_at),
            Family("spotwatch_fleet_receives_total", "counter",
                   "ReceiveMessage calls that answered (with or without messages).",
                   (Sample("", (), self.receives),)),
            Family("spotwatch_fleet_receive_errors_total", "counter",
                   "ReceiveMessage calls that failed.", (Sample("", (), self.receive_errors),)),
            _gauge("spotwatch_fleet_last_receive_timestamp_seconds",
                   "When the last ReceiveMessage answered (Unix time; 0: none yet).",
                   self.last_receive if self.last_receive is not None else 0),
            Family("spotwatch_fleet_events_received_total", "counter",
                   "Messages received from the queue.", (Sample("", (), self.received),)),
            Family("spotwatch_fleet_events_handled_total", "counter",
                   "Messages dealt with, by outcome (done, failed: left for redelivery, "
                   "duplicate, bad, ignored, lost).", _counter_samples(self.handled)),
            _gauge("spotwatch_fleet_events_in_flight", "Messages being handled now.",
                   self.in_flight),
            Family("spotwatch_fleet_hooks_total", "counter",
                   "Fleet hooks run, by hook and outcome.", _counter_samples(self.hooks)),
            Family("spotwatch_fleet_hook_duration_seconds", "histogram",
                   "How long each fleet hook ran.", tuple(durations)),
        ]
