"""``spotwatch drill``: a local rehearsal of an interruption with the real daemon code.

It starts the IMDS simulator on 127.0.0.1, runs the real watcher against it with
the real hooks, schedules a notice, and records a timeline: when the notice
appeared and was seen, each hook's start, end, outcome and output, and the time
left at the end. No AWS account, no network beyond loopback.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spotwatch.clouds.base import Rehearsal, Simulator
from spotwatch.config import RunConfig
from spotwatch.errors import SpotwatchError
from spotwatch.runner import NO_TIME_LEFT

ACTIONS = ("terminate", "stop", "hibernate")
EVENTS = ("spot", "rebalance", "maintenance", "upcoming-maintenance", "asg", "shutdown")
DEFAULT_LEAD = 120.0  # the spot notice's two minutes
AZURE_PREEMPT_LEAD = 30.0  # Azure's minimum notice for a Spot eviction


def default_lead(cloud: str, event: str) -> float:
    """``--lead`` when none is given: what the rehearsed platform promises at least."""
    if cloud == "azure" and event == "spot":
        return AZURE_PREEMPT_LEAD
    return DEFAULT_LEAD


def _the_end(event: str) -> str:
    # A rebalance recommendation announces no interruption; its deadline is spotwatch's own.
    return "the deadline" if event == "rebalance" else "the interruption"


@dataclass(frozen=True)
class DrillOptions:
    hooks_dir: Path
    notice_in: float = 2.0
    lead: float = 120.0
    action: str = "terminate"
    interval: float = 1.0
    hook_timeout: float = 60.0
    deadline_margin: float = 10.0
    event: str = "spot"  # which source to rehearse (EVENTS)
    watch: tuple[str, ...] = ()  # what the watcher watches; the event's source is added
    cloud: str = "aws"  # the simulator speaks this cloud's protocol
    resume: bool = False  # then the way back: the resume hooks, as when the end did not come
    resume_dir: Path | None = None
    # Identity document fields the AWS simulator gives (instanceId, region, ...):
    # a rehearsal against stand-ins names the instance its stand-ins know.
    identity: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HookLine:
    stream: str
    text: str
    at: float  # seconds since the drill began


@dataclass(frozen=True)
class HookEntry:
    name: str
    started: float  # seconds since the drill began
    ended: float
    outcome: str
    exit_code: int | None
    signal: int | None
    description: str
    output: tuple[HookLine, ...]

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class DrillReport:
    action: str
    lead: float
    interval: float
    hooks_dir: str
    deadline_margin: float
    imds_url: str
    began_at: float  # wall epoch
    notice_time: str
    notice_appeared: float | None  # seconds since began_at
    notice_seen: float | None
    deadline: float  # seconds since began_at
    hooks: tuple[HookEntry, ...]
    ended: float
    refused: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())
    event: str = "spot"
    cloud: str = "aws"
    resume_requested: bool = False
    resume_dir: str = ""
    resume_seen: float | None = None  # seconds since began_at
    resume_hooks: tuple[HookEntry, ...] = ()
    resume_ended: float | None = None

    @property
    def seconds_left(self) -> float:
        return self.deadline - self.ended

    @property
    def detection_seconds(self) -> float | None:
        if self.notice_appeared is None or self.notice_seen is None:
            return None
        return self.notice_seen - self.notice_appeared

    @property
    def failures(self) -> tuple[str, ...]:
        """Why the drill failed, in words; empty when it passed."""
        out = list(self.problems)
        if self.notice_seen is None:
            out.append("the notice was never seen")
        out += [f"{h.name}: {h.description}" for h in self.hooks if not h.ok]
        out += [f"{name}: refused (see 'spotwatch hooks')" for name in self.refused]
        if self.notice_seen is not None and self.seconds_left < self.deadline_margin:
            out.append(
                f"hooks ended {self.seconds_left:.1f} s before {_the_end(self.event)}, "
                f"inside the {self.deadline_margin:g} s margin"
            )
        if any(h.description == NO_TIME_LEFT for h in self.hooks):
            out.append(
                f"hint: hooks must end --deadline-margin {self.deadline_margin:g} s before "
                f"{_the_end(self.event)}, which leaves little of a {self.lead:g} s --lead; "
                "pass a smaller --deadline-margin or a longer --lead"
            )
        if self.resume_requested:
            if self.resume_seen is None:
                out.append("the way back never ran")
            out += [f"resume {h.name}: {h.description}" for h in self.resume_hooks if not h.ok]
        return tuple(out)

    @property
    def ok(self) -> bool:
        return not self.failures


def report_as_dict(report: DrillReport) -> dict[str, Any]:
    """The stable JSON shape of a report (``--json``)."""
    data = asdict(report)
    data["ok"] = report.ok
    data["failures"] = list(report.failures)
    data["seconds_left"] = round(report.seconds_left, 3)
    data["detection_seconds"] = report.detection_seconds
    for key, entries in (("hooks", report.hooks), ("resume_hooks", report.resume_hooks)):
        for hook, entry in zip(data[key], entries):
            hook["ok"] = entry.ok
            hook["seconds"] = round(entry.ended - entry.started, 3)
    return data


def render_json(report: DrillReport) -> str:
    return json.dumps(report_as_dict(report), indent=2)


def _stamp(seconds: float) -> str:
    return f"+{seconds:6.2f}s"


def render_text(report: DrillReport) -> str:
    """The timeline a person reads at a glance."""
    what, out_line = _describe(report)
    lead = 120.0 if report.event == "rebalance" else report.lead
    lines = [
        f"spotwatch drill: {what}, deadline {lead:g} s after it, hooks from {report.hooks_dir}",
        f"{_stamp(0.0)}  watching       IMDS simulator {report.imds_url}, "
        f"polling every {report.interval:g} s",
    ]
    for name in report.skipped:
        lines.append(f"{'':8}  (not run)      {name}")
    for name in report.refused:
        lines.append(f"{'':8}  REFUSED        {name}: unsafe owner or mode, see 'spotwatch hooks'")
    if report.notice_appeared is not None:
        lines.append(f"{_stamp(report.notice_appeared)}  notice out     {out_line}")
    if report.notice_seen is not None:
        detect = report.detection_seconds
        after = f", {detect:.2f} s after it appeared" if detect is not None else ""
        lines.append(
            f"{_stamp(report.notice_seen)}  notice seen    "
            f"{report.deadline - report.notice_seen:.1f} s to the deadline{after}"
        )
    lines += _hook_lines(report.hooks)
    failed = sum(1 for h in report.hooks if not h.ok)
    lines.append(
        f"{_stamp(report.ended)}  done           {len(report.hooks)} hooks, {failed} failed; "
        f"{report.seconds_left:.1f} s left before {_the_end(report.event)} "
        f"(margin {report.deadline_margin:g} s)"
    )
    if report.resume_requested:
        if report.resume_seen is not None:
            lines.append(
                f"{_stamp(report.resume_seen)}  way back       the end did not come: "
                f"resume hooks from {report.resume_dir}"
            )
        lines += _hook_lines(report.resume_hooks)
        if report.resume_ended is not None:
            bad = sum(1 for h in report.resume_hooks if not h.ok)
            lines.append(f"{_stamp(report.resume_ended)}  resumed        "
                         f"{len(report.resume_hooks)} resume hooks, {bad} failed")  # fmt: skip
    if report.ok:
        lines.append("PASS: every hook finished in time")
    else:
        lines.append("FAIL: " + "; ".join(report.failures))
    return "\n".join(lines)


def _hook_lines(hooks: tuple[HookEntry, ...]) -> list[str]:
    lines = []
    for hook in hooks:
        lines.append(f"{_stamp(hook.started)}  > {hook.name}")
        for out in hook.output:
            tag = "err" if out.stream == "stderr" else "out"
            lines.append(f"{'':10}  | {tag}: {out.text}")
        mark = "ok  " if hook.ok else "FAIL"
        lines.append(
            f"{_stamp(hook.ended)}  {mark} {hook.name}: {hook.description} "
            f"({hook.ended - hook.started:.2f} s)"
        )
    return lines


def _describe(report: DrillReport) -> tuple[str, str]:
    """(what is rehearsed, what the "notice out" line says)."""
    if report.event == "shutdown":
        return (
            "system shutdown (poweroff) with no notice",
            "systemctl poweroff: SIGTERM, the hooks run as SPOTWATCH_EVENT=shutdown",
        )
    from spotwatch.clouds import registry

    rehearsal = Rehearsal(report.event, report.action, report.lead, report.notice_appeared or 0.0)
    return registry.get(report.cloud).describe_drill(rehearsal, report.notice_time)


class _Timeline:
    """Collects the watcher's events, in seconds since the drill began."""

    def __init__(self, began_mono: float) -> None:
        self.began_mono = began_mono
        self.seen: float | None = None
        self.deadline: float | None = None  # epoch, as the notice gave it to the hooks
        self.hooks: list[HookEntry] = []
        self.resume_hooks: list[HookEntry] = []
        self.resume_seen: float | None = None
        self.notice: Any = None  # the Notice handled, for the way back
        self.began_wall = time.time()

    def __call__(self, event: str, fields: Mapping[str, Any]) -> None:
        if event == "notice.detected" and self.seen is None:
            self.seen = time.monotonic() - self.began_mono
            self.deadline = float(fields["deadline"])
            self.notice = fields.get("notice")
        elif event == "resume.detected" and self.resume_seen is None:
            self.resume_seen = time.monotonic() - self.began_mono
        elif event == "hook.finished":
            result = fields["result"]
            (self.resume_hooks if self.resume_seen is not None else self.hooks).append(
                HookEntry(
                    name=result.name,
                    started=result.started_at - self.began_wall,
                    ended=result.ended_at - self.began_wall,
                    outcome=result.outcome,
                    exit_code=result.exit_code,
                    signal=result.signal,
                    description=result.description,
                    output=tuple(
                        HookLine(o.stream, o.text, o.at - self.began_wall) for o in result.output
                    ),
                )
            )


def _not_dir(path: Path) -> str:
    # The same words as 'spotwatch hooks': a file there is not a missing directory.
    return "is not a directory" if path.exists() else "does not exist"


def run_drill(options: DrillOptions, environ: Mapping[str, str] = os.environ) -> DrillReport:
    """Rehearse one notice end to end and return what happened."""
    from spotwatch.clouds import registry
    from spotwatch.daemon import build_watcher
    from spotwatch.hooks import plan_hooks
    from spotwatch.stopper import Stopper

    try:
        is_dir = options.hooks_dir.is_dir()
    except OSError as exc:  # not reachable by the user the drill runs as
        raise SpotwatchError(
            f"cannot reach hooks directory {options.hooks_dir}: {exc.strerror or exc} "
            f"(as uid {os.geteuid()}); the service running as this user could not either",
            exit_code=2,
        ) from None
    if not is_dir:
        raise SpotwatchError(
            f"hooks directory {options.hooks_dir} {_not_dir(options.hooks_dir)}: "
            "pass --hooks-dir DIR (the repository's examples are in hooks.d)",
            exit_code=2,
        )
    if options.resume and not _resume_dir(options).is_dir():
        raise SpotwatchError(
            f"resume hooks directory {_resume_dir(options)} {_not_dir(_resume_dir(options))}: "
            "pass --resume-dir DIR (spotwatch install creates /etc/spotwatch/resume.d)",
            exit_code=2,
        )
    adapter = registry.get(options.cloud)
    if options.event not in adapter.drill_events:
        raise SpotwatchError(_no_such_event(options.event, adapter.name), exit_code=2)
    plan = plan_hooks(options.hooks_dir)
    stop = Stopper()
    stop.install()
    try:
        rehearsal = Rehearsal(options.event, options.action, options.lead, options.notice_in)
        drill_sim = adapter.drill(rehearsal)
        with (
            _serving(drill_sim.simulator) as sim,
            tempfile.TemporaryDirectory(prefix="spotwatch-drill-") as state_dir,
        ):
            if options.identity:
                from spotwatch.imdssim import ImdsSimulator

                # Only the action rehearsal sets one, and it rehearses AWS.
                if not isinstance(sim, ImdsSimulator):
                    raise SpotwatchError("a rehearsed identity needs --cloud aws", exit_code=2)
                sim.set_identity(**dict(options.identity))
            config = RunConfig(
                imds_url=sim.url,
                interval=options.interval,
                hooks_dir=options.hooks_dir,
                state_dir=Path(state_dir),
                hook_timeout=options.hook_timeout,
                deadline_margin=options.deadline_margin,
                watch=_drill_watch(options, adapter.drill_source(options.event)),
                resume_dir=_resume_dir(options),
                asg_deadline=options.lead,
                maintenance_lead=options.lead,
                cloud=options.cloud,
            )
            began_mono = time.monotonic()
            timeline = _Timeline(began_mono)
            appear_at = timeline.began_wall + options.notice_in
            notice_time = appear_at + options.lead
            notice_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(notice_time))
            link = None
            if options.event == "shutdown":
                link = _DrillShutdown(stop, options)
                notice_time = appear_at + options.lead
                _shut_down_at(stop, options.notice_in)
            else:
                notice_time, notice_text = drill_sim.schedule(appear_at)
            watcher = build_watcher(config, stop=stop, drill=True, max_notices=1,
                                    listener=timeline, shutdown=link)  # fmt: skip
            # If the notice is never seen (it should be, within one interval), give up.
            give_up = options.notice_in + 3 * options.interval + 10.0
            _stop_if_unseen(stop, timeline, give_up)
            watcher.run()
            ended = time.time() - timeline.began_wall
            resume_ended = None
            if options.resume and timeline.notice is not None and not stop.signals:
                # The way back, as after a boot of the same instance: a fresh watcher
                # (the first one was told to stop) on the same journal.
                stop.close()
                stop = Stopper()
                stop.install()
                again = build_watcher(config, stop=stop, drill=True, listener=timeline)
                again.come_back(timeline.notice, "drill: the end did not come")
                resume_ended = time.time() - timeline.began_wall
    finally:
        stop.close()
    problems: list[str] = []
    if plan.problem:
        # The fix on the FAIL line itself, not only in the log on stderr.
        problems.append(f"{plan.problem} (fix: {plan.fix})" if plan.fix else plan.problem)
    # The deadline the hooks saw (whole seconds from a notice time; seen + lead for
    # Auto Scaling and rebalance, which give none).
    seen_deadline = timeline.deadline if timeline.deadline is not None else int(notice_time)
    deadline = float(seen_deadline) - timeline.began_wall
    return DrillReport(
        action=options.action,
        lead=round(notice_time - appear_at, 3),
        interval=options.interval,
        hooks_dir=str(options.hooks_dir),
        deadline_margin=options.deadline_margin,
        imds_url=config.imds_url,
        began_at=timeline.began_wall,
        notice_time=notice_text,
        notice_appeared=options.notice_in,
        notice_seen=timeline.seen,
        deadline=deadline,
        hooks=tuple(timeline.hooks),
        ended=ended,
        refused=tuple(r.name for r in plan.rejected if r.severity == "refused"),
        skipped=tuple(
            f"{r.name}: {r.reason} ({r.fix})" for r in plan.rejected if r.severity == "skipped"
        ),
        problems=tuple(problems),
        event=options.event,
        cloud=options.cloud,
        resume_requested=options.resume,
        resume_dir=str(_resume_dir(options)),
        resume_seen=timeline.resume_seen,
        resume_hooks=tuple(timeline.resume_hooks),
        resume_ended=resume_ended,
    )


def _drill_watch(options: DrillOptions, source: str) -> tuple[str, ...]:
    """The sources watched: --watch, and ``source``, the one that sees the event."""
    if options.event == "shutdown":
        # The last check before the shutdown run asks the notice source too.
        return (*options.watch, "spot", "shutdown")
    return (*options.watch, source)


def _resume_dir(options: DrillOptions) -> Path:
    from spotwatch.config import DEFAULT_RESUME_DIR

    return options.resume_dir if options.resume_dir is not None else Path(DEFAULT_RESUME_DIR)


class _DrillShutdown:
    """The drill's system shutdown: a poweroff at --in, with --lead s as the unit's
    TimeoutStopSec; a Ctrl-C is the operator's, and stops all."""

    runs_hooks = True

    def __init__(self, stop: Any, options: DrillOptions) -> None:
        self._stop = stop
        self._options = options

    def classify(self) -> Any:
        from spotwatch.shutdown import StopKind

        if self._stop.signals:
            return StopKind(None, "interrupted (a signal)")
        return StopKind("poweroff", "drill: a rehearsed poweroff")

    def deadline(self, stopped_at: float) -> float:
        from spotwatch.shutdown import shutdown_deadline

        return shutdown_deadline(stopped_at, self._options.lead, cloud=self._options.cloud)

    def forced(self) -> bool:
        return bool(self._stop.signals)

    def last_check(self, monitors: Any) -> list[Any]:
        from spotwatch.shutdown import LAST_CHECK_SECONDS, last_check

        return last_check(monitors, LAST_CHECK_SECONDS)


def _shut_down_at(stop: Any, after: float) -> None:
    import threading

    timer = threading.Timer(after, stop.set)
    timer.daemon = True
    timer.start()


@contextmanager
def _serving(sim: Simulator) -> Iterator[Simulator]:
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def _no_such_event(event: str, cloud: str) -> str:
    from spotwatch.clouds import registry

    where = " and ".join(a.title for a in registry.every() if event in a.drill_events)
    here = registry.get(cloud).drill_events
    choices = " or ".join(e for e in here if e != "shutdown")
    if choices == "spot":
        return (
            f"--event {event} exists on {where} only; --cloud {cloud} announces only "
            "the spot reclaim: rehearse --event spot or shutdown"
        )
    return (
        f"--event {event} exists on {where} only; with --cloud {cloud} "
        f"rehearse --event {choices}"
    )


def _stop_if_unseen(stop: Any, timeline: _Timeline, after: float) -> None:
    import threading

    def check() -> None:
        if timeline.seen is None:
            stop.set()

    timer = threading.Timer(after, check)
    timer.daemon = True
    timer.start()
