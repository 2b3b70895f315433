"""The watch loop: poll every monitor on a fixed tick, hand new notices to the hooks.

Everything with a side effect is passed in (monitors, journal, hook planning and
running, clocks, the stop flag, the systemd notifier), so the loop runs in tests
with fakes and in ``spotwatch run`` and ``spotwatch drill`` with the real things.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from spotwatch import faults
from spotwatch.clocks import SYSTEM, Clocks
from spotwatch.clouds.metadata_http import ImdsError
from spotwatch.hooks import log_plan
from spotwatch.notice import REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION, Identity, Notice
from spotwatch.resume import Withdrawals, is_resume, resume_notice
from spotwatch.runner import RunObserver
from spotwatch.schedule import deadline_on_monotonic, next_tick

if TYPE_CHECKING:
    from spotwatch.boot import PreviousBoot
    from spotwatch.followup import FollowUp
    from spotwatch.hooks import Hook, HookPlan
    from spotwatch.monitor import Monitor
    from spotwatch.orphans import Orphan
    from spotwatch.runner import HookResult, HookSettings
    from spotwatch.shutdown import StopKind
    from spotwatch.stopper import StopFlag

_T = TypeVar("_T")


class SystemdLink(Protocol):
    def ready(self, status: str | None = None) -> None: ...

    def status(self, text: str) -> None: ...

    def stopping(self, status: str | None = None) -> None: ...

    def watchdog_if_due(self) -> None: ...

    def watchdog_interval(self) -> float | None: ...


class JournalLike(Protocol):
    def pending_hooks(self, notice: Notice, hooks: Sequence[Hook]) -> list[Hook]: ...

    def begin(self, notice: Notice) -> None: ...

    def hook_started(
        self, notice_id: str, name: str, group: dict[str, Any] | None = None
    ) -> None: ...

    def running_hook(self, notice_id: str) -> str | None: ...

    def running_group(self, notice_id: str) -> dict[str, Any] | None: ...

    def hook_finished(self, notice_id: str, result: HookResult) -> None: ...

    def complete(self, notice_id: str) -> None: ...

    def is_complete(self, notice_id: str) -> bool: ...

    def unfinished(self, now: float) -> list[Notice]: ...

    def end_in_progress(self, now: float) -> Notice | None: ...

    def fold(self, notice: Notice, into: str) -> None: ...

    def folded_into(self, notice_id: str) -> str | None: ...

    def finished_hooks(self, notice_id: str) -> dict[str, dict[str, Any]]: ...


class SignalReport(Protocol):
    """Logs the signals that came since the last call (the handlers only record them)."""

    def report(self, hook_running: str | None = None) -> None: ...


class ShutdownLink(Protocol):
    """What the watcher asks once a stop is requested (spotwatch.shutdown.SystemShutdown)."""

    runs_hooks: bool  # the ``shutdown`` source is watched

    def classify(self) -> StopKind: ...

    def deadline(self, stopped_at: float) -> float: ...

    def forced(self) -> bool:
        """A second stop request came: stop everything now."""
        ...

    def last_check(self, monitors: Sequence[Monitor]) -> list[Notice]:
        """One more look at every source, bounded in time (faults: nothing)."""
        ...


class BootLink(Protocol):
    """spotwatch.boot.BootRecord: what this boot remembers for the next one."""

    previous: PreviousBoot | None

    def identity(self, instance_id: str) -> None: ...

    def end_handled(self, notice: Notice) -> None: ...

    def resumed(self) -> None: ...

    def shutdown_began(self, kind: str, notice_id: str | None, hooks: Sequence[str]) -> None: ...

    def shutdown_ended(self, left: Sequence[str]) -> None: ...


IDENTITY_RETRY_SECONDS = 60.0
TERMINATE = "terminate"
HOOKS_DIR_RETRY = 1.0  # seconds between looks for a hooks directory missing at a notice
# Why the runner stopped between hooks, when spotwatch is not stopping (hooks.stopped).
LOWERED = "a notice of the same end brought the deadline forward; the rest start again"
SUPERSEDED = "a notice that ends the instance came; its hooks run instead"
ACTION_CHANGED = "a terminate notice of the same end came; the rest start again with its action"
SHUTDOWN_SUPERSEDES = "the system is shutting down; the shutdown's run follows"
SHUTDOWN_LOWERED = "the system is shutting down: the rest run within the time systemd gives"

# Called with (event name, fields) for what the drill shows on its timeline.
Listener = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class WatchSettings:
    interval: float
    hooks_dir: Path
    hooks: HookSettings  # how each hook runs: its timeout, the deadline margin, ...
    drill: bool = False
    max_notices: int | None = None  # stop after handling this many (the drill: 1)
    resume_dir: Path | None = None  # the resume hooks (None: no way back is run)


@dataclass
class _Handling:
    """The notice whose hooks are running, and the notices folded into it since.

    ``deadline`` (epoch seconds) is the earliest of theirs; ``lowered`` says a fold
    brought it forward since the runner started, so the hooks still to run are
    started again with it.
    """

    notice: Notice
    deadline: float
    env: tuple[tuple[str, str], ...]
    checked_at: float  # clock() of the last look for another notice of the same end
    followups: list[tuple[FollowUp, Notice]] = field(default_factory=list)
    lowered: bool = False
    superseded: bool = False
    action: str = ""  # the end's action: "terminate" once any notice in it says so
    action_changed: bool = False  # since the runner started: the rest start again with it

    def effective(self) -> Notice:
        """The first notice, with the earliest deadline, the end's action and every
        folded notice's env."""
        return dataclasses.replace(
            self.notice, deadline=self.deadline, env=self.env,
            action=self.action or self.notice.action,
        )  # fmt: skip


@dataclass
class _FaultBook:
    states: dict[str, faults.FaultState] = field(default_factory=dict)


def fault_kind(exc: ImdsError) -> str:
    return exc.kind


@dataclass(frozen=True)
class WatchSources:
    """What the cloud gives the loop: its monitors, how to read the instance's
    identity, the follow-ups and the fault types its clients raise. ``poll_scope``
    wraps one poll of every monitor (on AWS: one shared time budget)."""

    monitors: Sequence[Monitor]
    read_identity: Callable[[], Identity]
    fault_types: tuple[type[ImdsError], ...]  # each a metadata fault (kind, detail, advice)
    followups: Sequence[FollowUp] = ()
    poll_scope: Callable[[], AbstractContextManager[object]] = nullcontext


@dataclass(frozen=True)
class HookWork:
    """How a notice's hooks are planned, given their environment (from
    ``environ``), run, and recorded in the journal; what is left of a hook a
    previous run lost (``settle_orphan``, ``group_record``; None: not looked for)."""

    plan: Callable[[Path], HookPlan]
    runner: Callable[..., list[HookResult]]
    hook_environment: Callable[..., dict[str, str]]
    journal: JournalLike
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    settle_orphan: Callable[[Orphan, float], str] | None = None
    group_record: Callable[[int, float], dict[str, Any]] | None = None


@dataclass(frozen=True)
class WatcherLinks:
    """The loop's ties to its process and the system: the stop flag, systemd,
    an event listener, the signal report, the system shutdown and the boot record."""

    stop: StopFlag
    notifier: SystemdLink
    listener: Listener | None = None
    signals: SignalReport | None = None
    shutdown: ShutdownLink | None = None
    boot: BootLink | None = None


class Watcher:
    def __init__(
        self,
        settings: WatchSettings,
        *,
        sources: WatchSources,
        hooks: HookWork,
        links: WatcherLinks,
        clocks: Clocks = SYSTEM,
    ) -> None:
        self.settings = settings
        self._poll_scope = sources.poll_scope
        self._monitors = list(sources.monitors)
        self._read_identity = sources.read_identity
        self._fault_types = sources.fault_types
        self._followups = list(sources.followups)
        self._journal = hooks.journal
        self._plan = hooks.plan
        self._runner = hooks.runner
        self._hook_environment = hooks.hook_environment
        self._environ = hooks.environ
        self._settle_orphan = hooks.settle_orphan
        self._group_record = hooks.group_record
        self._stop = links.stop
        self._notifier = links.notifier
        self._listener = links.listener
        self._signals = links.signals
        self._shutdown = links.shutdown
        self._boot = links.boot
        self._clocks = clocks
        self._clock = clocks.monotonic
        self._wall = clocks.wall
        self._log: Any = clocks.logger()
        self._identity: Identity | None = None
        self._identity_retry_at = float("-inf")
        self._identity_failed = False
        self._faults = _FaultBook()
        self._handled: set[str] = set()
        self.notices_handled = 0
        self.polls = 0
        self.last_results: list[HookResult] = []
        self._poll_now = False
        self._spawned: dict[str, Any] | None = None
        self._folded_kinds: set[tuple[str, str]] = set()
        self._hook_running: str | None = None
        self._stop_kind: StopKind | None = None
        self._shutdown_deadline: float | None = None
        self._withdrawals = Withdrawals()
        self._monitor_of: dict[str, str] = {}  # notice id -> the monitor that saw it
        self.resumes_handled = 0

    # -- the loop -------------------------------------------------------------
    def run(self) -> int:
        """Watch until stopped (or ``max_notices`` handled). Returns the exit status."""
        names = [m.name for m in self._monitors]
        self._log.info(
            "watcher.started",
            interval=self.settings.interval,
            monitors=names,
            hooks_dir=str(self.settings.hooks_dir),
        )
        self._notifier.ready(f"watching every {self.settings.interval:g}s: {', '.join(names)}")
        self._resume_unfinished()
        self._come_back_after_boot()
        start = self._clock()
        while not self._stop.is_set():
            self.poll_once()
            if self._finished():
                break
            if self._poll_now:
                # A notice cut another short: look again at once, not a tick later.
                self._poll_now = False
                continue
            self._sleep_until(next_tick(start, self.settings.interval, self._clock()))
        self._report_signals()
        if not self._finished():
            self._finish_on_shutdown()
        self._notifier.stopping("stopping")
        self._log.info("watcher.stopped", polls=self.polls, notices=self.notices_handled)
        return 0

    def _resume_unfinished(self) -> None:
        """Finish what a previous run left half done, before the first poll:
        IMDS may be unreachable just now, and the deadline does not wait."""
        for notice in self._journal.unfinished(self._wall()):
            if self._stop.is_set():
                return
            self._log.warning("journal.resuming", notice_id=notice.id, kind=notice.kind)
            if is_resume(notice):
                self._run_resume(notice)
            else:
                self.handle(notice)

    def _finished(self) -> bool:
        limit = self.settings.max_notices
        return limit is not None and self.notices_handled >= limit

    def _sleep_until(self, tick: float) -> None:
        # Ping the watchdog from this live loop. Waking every half ping interval
        # keeps the longest gap between pings under 1.5 intervals (systemd allows 2).
        while not self._stop.is_set():
            self._report_signals()
            self._notifier.watchdog_if_due()
            remaining = tick - self._clock()
            if remaining <= 0:
                return
            ping = self._notifier.watchdog_interval()
            self._stop.wait(remaining if ping is None else min(remaining, ping / 2))
            if any(m.has_news() for m in self._monitors):
                return  # a background feed saw a change (Google, Azure): poll now

    def _wait_tick(self) -> float | None:
        # As in _sleep_until: checking every half ping interval keeps the longest
        # gap between pings at 1.5 intervals, under the 2 that systemd allows.
        ping = self._notifier.watchdog_interval()
        return None if ping is None else ping / 2

    # -- one poll -------------------------------------------------------------
    def poll_once(self) -> list[Notice]:
        """Ask every monitor once; handle what is new. Returns the notices seen."""
        self.polls += 1
        seen: list[Notice] = []
        failed: list[tuple[str, str]] = []  # (source, fault kind), for the metrics
        answers: dict[str, Notice | None] = {}  # what each monitor said, faults aside
        # Every source of one poll shares the poll's budget (poll_scope), so a
        # stuck metadata server holds the loop (and the watchdog) no longer.
        with self._poll_scope():
            for monitor in self._monitors:
                if self._stop.is_set():
                    break  # a stop cut the poll short: no fault to record
                try:
                    notice = monitor.check()
                except self._fault_types as exc:
                    if self._stop.is_set():
                        break
                    self._record_fault(monitor.name, exc)
                    failed.append((monitor.name, fault_kind(exc)))
                    continue
                self._record_fault(monitor.name, None)
                answers[monitor.name] = notice
                if notice is not None:
                    seen.append(notice)
                    self._monitor_of.setdefault(notice.id, monitor.name)
            self._emit("poll.done", {"faults": failed, "notices": len(seen)})
            self._notifier.watchdog_if_due()
            if not seen:
                self._notifier.status(self._idle_status())
                if (
                    self._identity is None
                    and not self._faults.states
                    and not self._stop.is_set()
                    and self._clock() >= self._identity_retry_at
                ):
                    self._try_identity()
                self._look_for_withdrawals(answers)
                return seen
        # A notice that ends the instance outranks a rebalance recommendation (or a
        # reboot) seen in the same poll; among them the spot notice comes first.
        seen.sort(key=lambda n: (not n.ends_instance, n.kind != SPOT_INTERRUPTION))
        self._log_still_out(seen)
        new = [n for n in seen if not self._is_done(n)]
        for notice in new:
            if self._stop.is_set():
                break
            if self._is_done(notice) or self._fold_into_end_in_progress(notice):
                continue
            # Further ends seen in this same poll fold into this one before its hooks start.
            together = [n for n in new if n is not notice and n.ends_instance]
            self.handle(notice, together=together if notice.ends_instance else ())
        if all(self._is_done(n) for n in seen):
            self._notifier.status(self._still_out_status(seen[0]))
        self._look_for_withdrawals(answers)
        return seen

    def _is_done(self, notice: Notice) -> bool:
        return notice.id in self._handled or self._journal.is_complete(notice.id)

    # -- a notice still out after its hooks ---------------------------------------
    def _log_still_out(self, seen: Sequence[Notice]) -> None:
        """Once per notice and run: one whose hooks a previous run already ran (the
        journal says so) is still out; say it, so a restart is not silent about it."""
        for notice in seen:
            if notice.id in self._handled or not self._journal.is_complete(notice.id):
                continue
            self._handled.add(notice.id)
            owner = self._journal.folded_into(notice.id) or notice.id
            finished = self._journal.finished_hooks(owner)
            self._log.info(
                "notice.still_out",
                notice_id=notice.id,
                kind=notice.kind,
                action=notice.action,
                folded_into=owner if owner != notice.id else None,
                hooks_done=len(finished),
                note="its hooks already ran (the journal says so); they do not run again",
            )

    def _still_out_status(self, notice: Notice) -> str:
        """The STATUS line while a handled or folded notice is still out: the hooks of
        its end across every run (the journal's count, not this run's)."""
        owner = self._journal.folded_into(notice.id) or notice.id
        stamp = time.strftime("%H:%M:%SZ", time.gmtime(self._wall()))
        if not self._journal.is_complete(owner):
            # Not closed: its hooks directory never came back in time.
            return (
                f"watching; last poll {stamp}: {notice.kind} {notice.action} still out, "
                "not handled: no hook ran"
            )
        finished = self._journal.finished_hooks(owner)
        ok = sum(1 for f in finished.values() if f.get("outcome") == "ok")
        folded = f", folded into {owner}" if owner != notice.id else ""
        return (
            f"watching; last poll {stamp}: {notice.kind} {notice.action} still out{folded}, "
            f"handled ({ok}/{len(finished)} hooks ok)"
        )

    def _idle_status(self) -> str:
        if self._faults.states:
            kinds = sorted({s.kind or "?" for s in self._faults.states.values()})
            return f"watching; IMDS fault: {', '.join(kinds)}"
        stamp = time.strftime("%H:%M:%SZ", time.gmtime(self._wall()))
        notes = [note for m in self._monitors if (note := m.status_note())]
        return "; ".join([f"watching; last poll {stamp}: no notice", *notes])

    def _record_fault(self, source: str, exc: ImdsError | None) -> None:
        kind = None if exc is None else fault_kind(exc)
        previous = self._faults.states.get(source, faults.FaultState())
        step = faults.observe(previous, kind, self._clock())
        if step.state.kind is None:
            self._faults.states.pop(source, None)
        else:
            self._faults.states[source] = step.state
        if exc is not None and step.change in ("started", "changed"):
            self._log.warning(
                "imds.fault",
                source=source,
                kind=kind,
                detail=exc.detail,
                advice=exc.advice,
                previous=step.previous.kind,
                note="logged once; spotwatch keeps polling and logs imds.recovered when it clears",
            )
        elif step.change == "cleared":
            since = step.previous.since
            self._log.info(
                "imds.recovered",
                source=source,
                kind=step.previous.kind,
                polls_failed=step.previous.polls,
                seconds=round(self._clock() - since, 1) if since is not None else None,
            )

    def _try_identity(self) -> Identity:
        if self._identity is not None:
            return self._identity
        try:
            self._identity = self._read_identity()
        except self._fault_types as exc:
            # Tried again a minute later on an idle poll (and at once for a notice);
            # logged once, not on every try.
            self._identity_retry_at = self._clock() + IDENTITY_RETRY_SECONDS
            if not self._identity_failed:
                self._identity_failed = True
                self._log.warning(
                    "identity.unavailable",
                    kind=fault_kind(exc),
                    detail=exc.detail,
                    note="hooks get 'unknown' for instance id, type, region and AZ "
                    "until it is read",
                )
            return Identity()
        if self._boot is not None:
            self._boot.identity(self._identity.instance_id)
        self._log.info(
            "identity.read",
            instance_id=self._identity.instance_id,
            instance_type=self._identity.instance_type,
            region=self._identity.region,
            az=self._identity.availability_zone,
        )
        return self._identity

    # -- a notice -------------------------------------------------------------
    def handle(self, notice: Notice, *, together: Sequence[Notice] = ()) -> list[HookResult]:
        """Run the hooks still due for ``notice``, journaling each, within its deadline.

        ``together``: notices of the same end seen in the same poll, folded in first.
        """
        self._log_detected(notice)
        identity = self._try_identity()
        plan = self._plan(self.settings.hooks_dir)
        log_plan(self._log, plan)
        if plan.missing:
            plan = self._wait_for_hooks_dir(notice, plan)
            if plan.missing:
                return self._no_hooks_dir(notice, plan)
        self._log_ignored(plan)
        self._orphan_first(notice, plan)
        pending = self._journal.pending_hooks(notice, plan.hooks)
        skipped = len(plan.hooks) - len(pending)
        if skipped:
            self._log.info("journal.resumed", notice_id=notice.id, already_done=skipped)
        self._journal.begin(notice)
        run = _Handling(notice, notice.deadline, notice.env, checked_at=self._clock())
        for other in together:
            if not self._is_done(other):
                self._fold(other, run)
        self._start_followups(run, notice)
        self._notifier.status(f"{notice.kind} {notice.action}: running {len(pending)} hooks")
        results = self._run_pending(run, pending, identity)
        # Stopped mid-run (SIGTERM): the journal resumes the hooks on the next start,
        # so the follow-ups' closing step (CompleteLifecycleAction) waits for that.
        if not self._stopping():
            for followup, about in run.followups:
                self._guarded(followup, "finished", partial(followup.finished, about, results))
        self.last_results = results
        return self._conclude(run, len(pending), results)

    # -- a hook the last run left running ------------------------------------------
    def _orphan_first(self, notice: Notice, plan: HookPlan) -> None:
        """Before any hook of ``notice`` runs: wait for (or stop) the hook a killed
        daemon left running, so it never runs twice at once. One stopped at its time
        is recorded as timed out; one that ended on its own runs again (its exit
        status was lost with the old daemon)."""
        if self._settle_orphan is None:
            return
        name = self._journal.running_hook(notice.id)
        record = self._journal.running_group(notice.id)
        if name is None or record is None:
            return
        from spotwatch import orphans
        from spotwatch.runner import TIMED_OUT, HookResult

        orphan = orphans.Orphan.of(notice.id, name, record)
        if orphan is None:
            return
        hooks = self.settings.hooks
        until = min(orphan.started_at + hooks.hook_timeout, notice.deadline - hooks.deadline_margin)
        if self._settle_orphan(orphan, until) != orphans.KILLED:
            return
        path = next((h.path for h in plan.hooks if h.name == name), self.settings.hooks_dir / name)
        self._journal.hook_finished(
            notice.id,
            HookResult(name, str(path), orphan.started_at, self._wall(), TIMED_OUT, None, None,
                       "timed out: left running by the previous spotwatch, stopped at its "
                       "time"),
        )  # fmt: skip

    # -- a hooks directory missing at the notice ------------------------------------
    def _wait_for_hooks_dir(self, notice: Notice, plan: HookPlan) -> HookPlan:
        """Look again every HOOKS_DIR_RETRY seconds until the directory can be read
        or the deadline less the margin: a notice is never closed without its hooks."""
        until = notice.deadline - self.settings.hooks.deadline_margin
        self._log.warning(
            "hooks.dir_missing",
            notice_id=notice.id,
            problem=plan.problem,
            fix=plan.fix,
            seconds_left=round(until - self._wall(), 1),
            note="looking again every second until it appears or the deadline less the margin",
        )
        self._notifier.status(f"{notice.kind} {notice.action}: hooks directory missing")
        while self._wall() < until and not self._stop.is_set():
            self._report_signals()
            self._notifier.watchdog_if_due()
            self._stop.wait(min(HOOKS_DIR_RETRY, max(0.0, until - self._wall())))
            plan = self._plan(self.settings.hooks_dir)
            if not plan.missing:
                log_plan(self._log, plan)
                self._log.info("hooks.dir_back", notice_id=notice.id, hooks=len(plan.hooks))
                return plan
        return plan

    def _no_hooks_dir(self, notice: Notice, plan: HookPlan) -> list[HookResult]:
        """The directory never came back in time (or spotwatch is stopping): the notice
        is recorded but not closed, so a restart in time still runs its hooks."""
        self._journal.begin(notice)
        self._handled.add(notice.id)  # this run does not wait again on every poll
        if not self._stop.is_set():
            self.notices_handled += 1
        self._log.error(
            "notice.not_handled",
            notice_id=notice.id,
            problem=plan.problem,
            fix=plan.fix,
            note="no hook ran: the hooks directory was missing until the deadline; the "
            "notice is not marked handled, so a restart before the deadline runs them",
        )
        self._notifier.status(
            f"{notice.kind} {notice.action} still out: no hook ran (hooks directory missing)"
        )
        return []

    def _log_ignored(self, plan: HookPlan) -> None:
        """At a notice, the names that will not run for good reason (backups, ...), at
        info: the plan logs each at debug only."""
        ignored = [r.name for r in plan.rejected if r not in plan.warnings]
        if ignored:
            self._log.info("hooks.ignored", directory=str(plan.directory), names=ignored)

    def _log_detected(self, notice: Notice) -> None:
        wall_now = self._wall()
        fields = {
            "notice_id": notice.id,
            "kind": notice.kind,
            "action": notice.action,
            "notice_time": notice.raw_time,
            "deadline": round(notice.deadline, 3),
            "seconds_left": round(notice.deadline - wall_now, 1),
            "source": notice.source,
        }
        if notice.problem:
            fields["problem"] = notice.problem
        self._log.warning("notice.detected", **fields)
        self._emit("notice.detected", {**fields, "seen_at": wall_now, "notice": notice})

    def _run_pending(
        self, run: _Handling, pending: list[Hook], identity: Identity
    ) -> list[HookResult]:
        """Run ``pending``; when a fold brings the deadline forward, the hooks still to
        run start again from there with it."""
        notice_id = run.notice.id

        def on_spawn(hook: Hook, pgid: int) -> None:
            if self._group_record is not None:
                self._spawned = self._group_record(pgid, self._wall())

        def on_start(hook: Hook) -> None:
            self._hook_running = hook.name
            group, self._spawned = self._spawned, None
            self._journal.hook_started(notice_id, hook.name, group)
            self._notifier.status(f"{run.notice.kind} {run.notice.action}: running {hook.name}")
            self._notifier.watchdog_if_due()
            self._emit("hook.started", {"hook": hook.name})

        def on_finish(result: HookResult) -> None:
            self._hook_running = None
            self._journal.hook_finished(notice_id, result)
            self._notifier.watchdog_if_due()
            self._emit("hook.finished", {"hook": result.name, "result": result})

        def on_wait() -> None:
            self._report_signals()
            self._notifier.watchdog_if_due()
            for followup, about in run.followups:
                self._guarded(followup, "tick", partial(followup.tick, about))

        results: list[HookResult] = []
        while True:
            run.lowered = run.action_changed = False
            env = self._hook_environment(
                self._environ, run.effective(), identity, drill=self.settings.drill
            )
            batch = self._runner(
                pending,
                env,
                settings=self.settings.hooks,
                deadline_mono=deadline_on_monotonic(run.deadline, self._wall(), self._clock()),
                should_stop=lambda: self._should_stop(run),
                observer=RunObserver(
                    on_start=on_start, on_finish=on_finish, on_wait=on_wait,
                    on_spawn=on_spawn, wait_tick=self._wait_tick(),
                ),
                clocks=self._clocks,
            )  # fmt: skip
            results += batch
            pending = pending[len(batch) :]
            if not ((run.lowered or run.action_changed) and pending):
                return results
            if run.superseded or self._stopping():
                return results
            if not run.lowered:
                left = [h.name for h in pending]
                action = run.effective().action
                self._log.info("notice.action_changed", notice_id=notice_id, action=action,
                               left=left)  # fmt: skip
                continue
            self._log.info(
                "notice.deadline_lowered",
                notice_id=notice_id,
                deadline=round(run.deadline, 3),
                left=[h.name for h in pending],
                note="a notice of the same end came with an earlier deadline",
            )

    def _report_signals(self) -> None:
        if self._signals is not None:
            self._signals.report(self._hook_running)

    def _should_stop(self, run: _Handling) -> bool | str:
        """Asked between hooks. A notice that does not end the instance (a rebalance
        recommendation, a reboot) must not hold up one that does: it is cut short. For
        one that ends it, another notice of the same end folds in; the runner stops if
        that brought the deadline forward, and starts again with it."""
        self._report_signals()
        if is_resume(run.notice):
            return self._stop.is_set()  # the journal finishes it on the next start
        if self._stopping():
            return True
        if self._stop.is_set():
            # A system shutdown: this run goes on, to the shutdown's deadline.
            if not run.notice.ends_instance:
                run.superseded = True  # the shutdown's own run follows
                return SHUTDOWN_SUPERSEDES
            assert self._shutdown_deadline is not None
            if self._shutdown_deadline < run.deadline:
                run.deadline = self._shutdown_deadline
                run.lowered = True
                return SHUTDOWN_LOWERED
        if run.notice.ends_instance:
            self._look_for_same_end(run)
            if run.lowered:
                return LOWERED
            return ACTION_CHANGED if run.action_changed else False
        if self._end_pending():
            run.superseded = True
        return SUPERSEDED if run.superseded else False

    def _conclude(
        self, run: _Handling, planned: int, results: list[HookResult]
    ) -> list[HookResult]:
        notice = run.notice
        if run.superseded:
            self._log.warning(
                "notice.superseded",
                notice_id=notice.id,
                kind=notice.kind,
                done=len(results),
                left=planned - len(results),
                note="a notice that ends the instance came; its hooks run now instead",
            )
            self._journal.complete(notice.id)
            self._handled.add(notice.id)
            self._poll_now = True
            return results
        if len(results) < planned:
            # Stopped between hooks: the journal keeps the rest for the next start.
            self._log.warning(
                "notice.interrupted",
                notice_id=notice.id,
                done=len(results),
                left=planned - len(results),
                note="the remaining hooks run when spotwatch starts again",
            )
            return results
        self._journal.complete(notice.id)
        self._handled.add(notice.id)
        self.notices_handled += 1
        self._withdrawals.handled(self._monitor_of.get(notice.id, notice.source), notice)
        if notice.ends_instance and self._boot is not None:
            self._boot.end_handled(notice)
        failed = [r.name for r in results if not r.ok]
        left = round(run.deadline - self._wall(), 1)
        extra = {} if results else {"note": "no hook ran: the hooks directory has none"}
        self._log.log(
            logging.WARNING if failed or not results else logging.INFO,
            "notice.handled",
            notice_id=notice.id,
            hooks=len(results),
            failed=failed,
            seconds_left=left,
            **extra,
        )
        self._emit(
            "notice.handled", {"notice_id": notice.id, "seconds_left": left, "failed": failed}
        )
        # Every hook of this notice, across runs (a restart resumed it), not this run's.
        finished = self._journal.finished_hooks(notice.id) or {r.name: {} for r in results}
        ok = sum(1 for f in finished.values() if f.get("outcome") == "ok")
        self._notifier.status(
            f"watching; handled {notice.kind} {notice.action} ({ok}/{len(finished)} hooks ok)"
        )
        return results

    # -- one end, one run ---------------------------------------------------------
    def _fold_into_end_in_progress(self, notice: Notice) -> bool:
        """Fold ``notice`` into the end whose deadline has not passed, if it ends the
        instance and there is one (after its hooks: nothing more runs)."""
        if not notice.ends_instance:
            return False
        owner = self._journal.end_in_progress(self._wall())
        if owner is None or owner.id == notice.id:
            return False
        self._fold(notice, None, owner)
        return True

    def _fold(self, notice: Notice, run: _Handling | None, owner: Notice | None = None) -> None:
        """Record ``notice`` as the same end as ``run`` (running) or ``owner`` (done)."""
        into = run.notice if run is not None else owner
        assert into is not None
        self._journal.fold(notice, into.id)
        self._handled.add(notice.id)
        current = run.deadline if run is not None else into.deadline
        # A notice whose time moves on every poll folds in on every poll: the first
        # fold of its kind into an end (or one that brings the deadline forward) is
        # a warning, the repeats are info.
        repeat = (into.id, notice.kind) in self._folded_kinds and notice.deadline >= current
        self._folded_kinds.add((into.id, notice.kind))
        (self._log.info if repeat else self._log.warning)(
            "notice.folded",
            notice_id=notice.id,
            kind=notice.kind,
            into=into.id,
            into_kind=into.kind,
            deadline=round(min(current, notice.deadline), 3),
            earlier=notice.deadline < current,
            note="one end of the instance, one run of the hooks",
        )
        self._emit("notice.folded", {"notice_id": notice.id, "into": into.id})
        if run is None:
            # The hooks already ran for this end: the follow-up's work comes at once.
            for followup in self._applicable(notice):
                self._guarded(followup, "started", partial(followup.started, notice))
                self._guarded(followup, "finished", partial(followup.finished, notice, []))
            return
        if notice.deadline < run.deadline:
            run.deadline = notice.deadline
            run.lowered = True
        if notice.action == TERMINATE and run.effective().action != TERMINATE:
            # A stop (or hibernate) that became a terminate: the hooks still to run
            # must hear SPOTWATCH_ACTION=terminate.
            run.action = TERMINATE
            run.action_changed = True
        known = {name for name, _ in run.env}
        run.env += tuple(pair for pair in notice.env if pair[0] not in known)
        self._start_followups(run, notice)

    def _look_for_same_end(self, run: _Handling) -> None:
        # Between hooks, at most once an interval: the runner asks before every hook.
        now = self._clock()
        if now - run.checked_at < self.settings.interval:
            return
        run.checked_at = now
        for monitor in self._end_monitors():
            try:
                found = monitor.check()
            except self._fault_types:
                continue  # the next poll logs the fault
            if found is None or found.id == run.notice.id:
                continue
            if found.ends_instance and not self._is_done(found):
                self._fold(found, run)

    def _end_pending(self) -> bool:
        """A quick look for a notice that ends the instance, not yet handled."""
        for monitor in self._end_monitors():
            try:
                found = monitor.check()
            except self._fault_types:
                continue  # the next poll logs the fault
            if found is not None and found.ends_instance and not self._is_done(found):
                return True
        return False

    def _end_monitors(self) -> list[Monitor]:
        # A rebalance recommendation never ends the instance: no need to ask.
        return [m for m in self._monitors if m.name != REBALANCE_RECOMMENDATION]

    # -- a system shutdown ---------------------------------------------------------
    def _stop_kind_now(self) -> StopKind | None:
        """What the stop request is (None: none yet), asked once, from the loop: the
        signal handler only records."""
        if not self._stop.is_set() or self._shutdown is None:
            return None
        if self._stop_kind is None:
            kind = self._shutdown.classify()
            self._stop_kind = kind
            if kind.is_shutdown:
                self._shutdown_deadline = self._shutdown.deadline(self._wall())
                self._log.warning(
                    "shutdown.detected",
                    shutdown=kind.shutdown,
                    how=kind.how,
                    deadline=round(self._shutdown_deadline, 3),
                    seconds_left=round(self._shutdown_deadline - self._wall(), 1),
                    note="the hooks run to the end, within the time systemd gives the stop",
                )
                self._emit("shutdown.detected", {"shutdown": kind.shutdown, "how": kind.how})
                if self._boot is not None:
                    self._boot.shutdown_began(str(kind.shutdown), None, [])
            else:
                self._log.info("stop.requested", how=kind.how)
        return self._stop_kind

    def _stopping(self) -> bool:
        """Stop what runs: an operator's stop, or a second stop request in a shutdown.
        A system shutdown alone does not: the hooks are what it is for."""
        if not self._stop.is_set():
            return False
        kind = self._stop_kind_now()
        if kind is None or not kind.is_shutdown:
            return True
        assert self._shutdown is not None
        if self._shutdown.forced():
            return True
        return self._shutdown_deadline is not None and self._wall() >= self._shutdown_deadline

    def _finish_on_shutdown(self) -> None:
        """On a system shutdown: one last look at every source; a notice that ends the
        instance runs its remaining hooks, and with none the hooks run once as a
        ``shutdown`` event (if watched), all within the shutdown's deadline."""
        kind = self._stop_kind_now()
        if kind is None or not kind.is_shutdown or self._shutdown is None:
            return
        deadline = self._shutdown_deadline
        assert deadline is not None
        target: Notice | None = self._journal.end_in_progress(self._wall())
        if not self._stopping():
            found = self._shutdown.last_check(self._monitors)
            ends = [n for n in found if n.ends_instance and not self._is_done(n)]
            ends.sort(key=lambda n: n.kind != SPOT_INTERRUPTION)
            owner = self._journal.end_in_progress(self._wall())
            if ends and (owner is None or owner.id == ends[0].id):
                target = dataclasses.replace(ends[0], deadline=min(ends[0].deadline, deadline))
                self.handle(target, together=ends[1:])
            elif ends and owner is not None:
                for notice in ends:
                    self._fold(notice, None, owner)
                target = owner
            elif owner is not None:
                target = owner
                if not self._journal.is_complete(owner.id):
                    self.handle(dataclasses.replace(owner, deadline=min(owner.deadline, deadline)))
                else:
                    self._log.info(
                        "shutdown.after_notice",
                        notice_id=owner.id,
                        kind=owner.kind,
                        note="this end's hooks already ran: nothing more runs",
                    )
            elif self._shutdown.runs_hooks:
                target = self._shutdown_notice(str(kind.shutdown), deadline)
                self.handle(target)
            else:
                self._log.info(
                    "shutdown.not_watched",
                    note="the shutdown source is not in --watch: no hooks run on a shutdown",
                )
        self._record_shutdown_end(target)

    def _shutdown_notice(self, kind: str, deadline: float) -> Notice:
        from spotwatch.notice import notice_id
        from spotwatch.shutdown import SHUTDOWN_EVENT

        now = self._wall()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return Notice(
            kind=SHUTDOWN_EVENT,
            action=kind,
            raw_time=stamp,
            time=now,
            deadline=deadline,
            id=notice_id(SHUTDOWN_EVENT, kind, f"{stamp}:{now:.6f}"),
            source=SHUTDOWN_EVENT,
            env=(("SPOTWATCH_SHUTDOWN", kind),),
        )

    def _record_shutdown_end(self, target: Notice | None) -> None:
        if self._boot is None:
            return
        left: list[str] = []
        names: list[str] = []
        if target is not None:
            hooks = self._plan(self.settings.hooks_dir).hooks
            names = [h.name for h in hooks]
            if not self._journal.is_complete(target.id):
                left = [h.name for h in self._journal.pending_hooks(target, hooks)]
        kind = self._stop_kind.shutdown if self._stop_kind is not None else None
        self._boot.shutdown_began(str(kind), target.id if target else None, names)
        self._boot.shutdown_ended(left)
        if left:
            self._log.warning("shutdown.cut_short", hooks_left=left,
                              notice_id=target.id if target else None)  # fmt: skip

    # -- the way back ------------------------------------------------------------------
    def _look_for_withdrawals(self, answers: Mapping[str, Notice | None]) -> None:
        """A handled notice its source no longer shows, with no end since: come back."""
        for name, answer in answers.items():
            if self._stop.is_set():
                return
            gone = self._withdrawals.observe(name, answer)
            if gone is not None:
                why = f"{gone.kind} {gone.action} is over and the instance still runs"
                self.come_back(gone, why)

    def _come_back_after_boot(self) -> None:
        """A new boot of the same instance after an end whose hooks ran: come back."""
        previous = self._boot.previous if self._boot is not None else None
        if previous is None or previous.last_end is None or self._stop.is_set():
            return
        assert self._boot is not None
        identity = self._try_identity()
        then = previous.instance_id
        if then and identity.instance_id != "unknown" and then != identity.instance_id:
            self._log.info("resume.other_instance", was=then, now=identity.instance_id,
                           note="the state directory came from another instance: "
                           "nothing to come back from")  # fmt: skip
        else:
            end = previous.last_end
            self.come_back(end, f"a new boot of the same instance after {end.kind} {end.action}")
        self._boot.resumed()

    def come_back(self, original: Notice, why: str) -> None:
        """Run the resume hooks for ``original`` once (the drill calls this too)."""
        if self.settings.resume_dir is None:
            return
        notice = resume_notice(original, self._wall())
        if self._journal.is_complete(notice.id):
            return
        self._log.warning("resume.detected", notice_id=original.id, kind=original.kind,
                          action=original.action, why=why)  # fmt: skip
        self._emit("resume.detected", {"notice_id": original.id, "why": why})
        self._run_resume(notice)

    def _run_resume(self, notice: Notice) -> list[HookResult]:
        """Run the resume hooks still due for ``notice`` (a resume_notice), journaled."""
        assert self.settings.resume_dir is not None
        identity = self._try_identity()
        plan = self._plan(self.settings.resume_dir)
        if plan.missing:
            # resume.d is optional: without it there is nothing to put back.
            self._log.info("resume.no_hooks", directory=str(self.settings.resume_dir),
                           notice_id=notice.id)  # fmt: skip
            return []
        log_plan(self._log, plan)
        pending = self._journal.pending_hooks(notice, plan.hooks)
        self._journal.begin(notice)
        run = _Handling(notice, notice.deadline, notice.env, checked_at=self._clock())
        self._notifier.status(f"resume after {notice.kind}: running {len(pending)} hooks")
        results = self._run_pending(run, pending, identity)
        if len(results) < len(pending):
            self._log.warning(
                "resume.interrupted",
                notice_id=notice.id,
                done=len(results),
                left=len(pending) - len(results),
                note="the remaining resume hooks run when spotwatch starts again",
            )
            return results
        self._journal.complete(notice.id)
        self._handled.add(notice.id)
        self.resumes_handled += 1
        failed = [r.name for r in results if not r.ok]
        self._log.log(logging.WARNING if failed else logging.INFO, "resume.handled",
                      notice_id=notice.id, hooks=len(results), failed=failed)  # fmt: skip
        self._emit("resume.handled", {"notice_id": notice.id, "failed": failed})
        self._notifier.status(f"watching; resumed after {notice.kind} {notice.action}")
        return results

    # -- follow-ups ---------------------------------------------------------------
    def _applicable(self, notice: Notice) -> list[FollowUp]:
        return [
            f for f in self._followups
            if self._guarded(f, "applies", partial(f.applies, notice))
        ]  # fmt: skip

    def _start_followups(self, run: _Handling, notice: Notice) -> None:
        for followup in self._applicable(notice):
            run.followups.append((followup, notice))
            self._guarded(followup, "started", partial(followup.started, notice))
            # What the follow-up learnt for the hooks (SPOTWATCH_ASG_NAME).
            known = {name for name, _ in run.env}
            extra = self._guarded(followup, "environment", partial(followup.environment, notice))
            run.env += tuple(pair for pair in extra or () if pair[0] not in known)

    def _guarded(self, followup: FollowUp, step: str, call: Callable[[], _T]) -> _T | None:
        """``call`` (one step of ``followup``), or None when it raised: a follow-up's
        trouble never stops the hooks."""
        try:
            return call()
        except Exception as exc:
            self._log.error(
                "followup.failed",
                followup=type(followup).__name__,
                step=step,
                error=f"{type(exc).__name__}: {exc}",
            )
            return None

    def _emit(self, event: str, fields: Mapping[str, Any]) -> None:
        if self._listener is not None:
            self._listener(event, fields)

