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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from spotwatch import faults
from spotwatch.hooks import log_plan
from spotwatch.logs import get_logger
from spotwatch.notice import REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION, Identity, Notice
from spotwatch.schedule import deadline_on_monotonic, next_tick

if TYPE_CHECKING:
    from spotwatch.followup import FollowUp
    from spotwatch.hooks import Hook, HookPlan
    from spotwatch.runner import HookResult, HookSettings
    from spotwatch.stopper import StopFlag


class Monitor(Protocol):
    name: str

    def check(self) -> Notice | None: ...


class SystemdLink(Protocol):
    def ready(self, status: str | None = None) -> None: ...

    def status(self, text: str) -> None: ...

    def stopping(self, status: str | None = None) -> None: ...

    def watchdog_if_due(self) -> None: ...

    def watchdog_interval(self) -> float | None: ...


class JournalLike(Protocol):
    def pending_hooks(self, notice: Notice, hooks: Sequence[Hook]) -> list[Hook]: ...

    def begin(self, notice: Notice) -> None: ...

    def hook_started(self, notice_id: str, name: str) -> None: ...

    def hook_finished(self, notice_id: str, result: HookResult) -> None: ...

    def complete(self, notice_id: str) -> None: ...

    def is_complete(self, notice_id: str) -> bool: ...

    def unfinished(self, now: float) -> list[Notice]: ...

    def end_in_progress(self, now: float) -> Notice | None: ...

    def fold(self, notice: Notice, into: str) -> None: ...


IDENTITY_RETRY_SECONDS = 60.0
# Why the runner stopped between hooks, when spotwatch is not stopping (hooks.stopped).
LOWERED = "a notice of the same end brought the deadline forward; the rest start again"
SUPERSEDED = "a notice that ends the instance came; its hooks run instead"

# Called with (event name, fields) for what the drill shows on its timeline.
Listener = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class WatchSettings:
    interval: float
    hooks_dir: Path
    hooks: HookSettings  # how each hook runs: its timeout, the deadline margin, ...
    drill: bool = False
    max_notices: int | None = None  # stop after handling this many (the drill: 1)


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

    def effective(self) -> Notice:
        """The first notice, with the earliest deadline and every folded notice's env."""
        return dataclasses.replace(self.notice, deadline=self.deadline, env=self.env)


@dataclass
class _FaultBook:
    states: dict[str, faults.FaultState] = field(default_factory=dict)


def fault_kind(exc: BaseException) -> str:
    return str(getattr(exc, "kind", type(exc).__name__))


class Watcher:
    def __init__(
        self,
        settings: WatchSettings,
        *,
        monitors: Sequence[Monitor],
        read_identity: Callable[[], Identity],
        journal: JournalLike,
        stop: StopFlag,
        notifier: SystemdLink,
        plan: Callable[[Path], HookPlan],
        runner: Callable[..., list[HookResult]],
        hook_environment: Callable[..., dict[str, str]],
        fault_types: tuple[type[BaseException], ...],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] = os.environ,
        listener: Listener | None = None,
        log: Any = None,
        followups: Sequence[FollowUp] = (),
        poll_scope: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.settings = settings
        self._poll_scope = poll_scope
        self._monitors = list(monitors)
        self._read_identity = read_identity
        self._journal = journal
        self._stop = stop
        self._notifier = notifier
        self._plan = plan
        self._runner = runner
        self._hook_environment = hook_environment
        self._fault_types = fault_types
        self._clock = clock
        self._wall = wall_clock
        self._environ = environ
        self._listener = listener
        self._log: Any = log if log is not None else get_logger()
        self._identity: Identity | None = None
        self._identity_retry_at = float("-inf")
        self._identity_failed = False
        self._faults = _FaultBook()
        self._handled: set[str] = set()
        self.notices_handled = 0
        self.polls = 0
        self.last_results: list[HookResult] = []
        self._poll_now = False
        self._followups = list(followups)

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
            self.handle(notice)

    def _finished(self) -> bool:
        limit = self.settings.max_notices
        return limit is not None and self.notices_handled >= limit

    def _sleep_until(self, tick: float) -> None:
        # Ping the watchdog from this live loop. Waking every half ping interval
        # keeps the longest gap between pings under 1.5 intervals (systemd allows 2).
        while not self._stop.is_set():
            self._notifier.watchdog_if_due()
            remaining = tick - self._clock()
            if remaining <= 0:
                return
            ping = self._notifier.watchdog_interval()
            self._stop.wait(remaining if ping is None else min(remaining, ping / 2))
            if any(_has_news(m) for m in self._monitors):
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
                if notice is not None:
                    seen.append(notice)
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
                return seen
        # A notice that ends the instance outranks a rebalance recommendation (or a
        # reboot) seen in the same poll; among them the spot notice comes first.
        seen.sort(key=lambda n: (not n.ends_instance, n.kind != SPOT_INTERRUPTION))
        new = [n for n in seen if not self._is_done(n)]
        for notice in new:
            if self._stop.is_set():
                break
            if self._is_done(notice) or self._fold_into_end_in_progress(notice):
                continue
            # Further ends seen in this same poll fold into this one before its hooks start.
            together = [n for n in new if n is not notice and n.ends_instance]
            self.handle(notice, together=together if notice.ends_instance else ())
        return seen

    def _is_done(self, notice: Notice) -> bool:
        return notice.id in self._handled or self._journal.is_complete(notice.id)

    def _idle_status(self) -> str:
        if self._faults.states:
            kinds = sorted({s.kind or "?" for s in self._faults.states.values()})
            return f"watching; IMDS fault: {', '.join(kinds)}"
        stamp = time.strftime("%H:%M:%SZ", time.gmtime(self._wall()))
        notes = [note for m in self._monitors if (note := _status_note(m))]
        return "; ".join([f"watching; last poll {stamp}: no notice", *notes])

    def _record_fault(self, source: str, exc: BaseException | None) -> None:
        kind = None if exc is None else fault_kind(exc)
        previous = self._faults.states.get(source, faults.FaultState())
        step = faults.observe(previous, kind, self._clock())
        if step.state.kind is None:
            self._faults.states.pop(source, None)
        else:
            self._faults.states[source] = step.state
        if step.change in ("started", "changed"):
            self._log.warning(
                "imds.fault",
                source=source,
                kind=kind,
                detail=str(getattr(exc, "detail", exc)),
                advice=getattr(exc, "advice", ""),
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
                    detail=str(getattr(exc, "detail", exc)),
                    note="hooks get 'unknown' for instance id, type, region and AZ "
                    "until it is read",
                )
            return Identity()
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
        if not self._stop.is_set():
            for followup, about in run.followups:
                self._followup_call(followup, "finished", about, results)
        self.last_results = results
        return self._conclude(run, len(pending), results)

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

        def on_start(hook: Hook) -> None:
            self._journal.hook_started(notice_id, hook.name)
            self._notifier.status(f"{run.notice.kind} {run.notice.action}: running {hook.name}")
            self._notifier.watchdog_if_due()
            self._emit("hook.started", {"hook": hook.name})

        def on_finish(result: HookResult) -> None:
            self._journal.hook_finished(notice_id, result)
            self._notifier.watchdog_if_due()
            self._emit("hook.finished", {"hook": result.name, "result": result})

        def on_wait() -> None:
            self._notifier.watchdog_if_due()
            for followup, about in run.followups:
                self._followup_call(followup, "tick", about)

        results: list[HookResult] = []
        while True:
            run.lowered = False
            env = self._hook_environment(
                self._environ, run.effective(), identity, drill=self.settings.drill
            )
            batch = self._runner(
                pending,
                env,
                settings=self.settings.hooks,
                deadline_mono=deadline_on_monotonic(run.deadline, self._wall(), self._clock()),
                should_stop=lambda: self._should_stop(run),
                on_start=on_start,
                on_finish=on_finish,
                clock=self._clock,
                wall_clock=self._wall,
                on_wait=on_wait,
                wait_tick=self._wait_tick(),
            )
            results += batch
            pending = pending[len(batch) :]
            if not (run.lowered and pending) or run.superseded or self._stop.is_set():
                return results
            self._log.info(
                "notice.deadline_lowered",
                notice_id=notice_id,
                deadline=round(run.deadline, 3),
                left=[h.name for h in pending],
                note="a notice of the same end came with an earlier deadline",
            )

    def _should_stop(self, run: _Handling) -> bool | str:
        """Asked between hooks. A notice that does not end the instance (a rebalance
        recommendation, a reboot) must not hold up one that does: it is cut short. For
        one that ends it, another notice of the same end folds in; the runner stops if
        that brought the deadline forward, and starts again with it."""
        if self._stop.is_set():
            return True
        if run.notice.ends_instance:
            self._look_for_same_end(run)
            return LOWERED if run.lowered else False
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
        failed = [r.name for r in results if not r.ok]
        left = round(run.deadline - self._wall(), 1)
        self._log.log(
            logging.WARNING if failed else logging.INFO,
            "notice.handled",
            notice_id=notice.id,
            hooks=len(results),
            failed=failed,
            seconds_left=left,
        )
        self._emit(
            "notice.handled", {"notice_id": notice.id, "seconds_left": left, "failed": failed}
        )
        self._notifier.status(
            f"watching; handled {notice.kind} {notice.action} "
            f"({len(results) - len(failed)}/{len(results)} hooks ok)"
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
        self._log.warning(
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
                self._followup_call(followup, "started", notice)
                self._followup_call(followup, "finished", notice, [])
            return
        if notice.deadline < run.deadline:
            run.deadline = notice.deadline
            run.lowered = True
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

    # -- follow-ups ---------------------------------------------------------------
    def _applicable(self, notice: Notice) -> list[FollowUp]:
        return [f for f in self._followups if self._followup_call(f, "applies", notice)]

    def _start_followups(self, run: _Handling, notice: Notice) -> None:
        for followup in self._applicable(notice):
            run.followups.append((followup, notice))
            self._followup_call(followup, "started", notice)
            # Optional: what the follow-up learnt for the hooks (SPOTWATCH_ASG_NAME).
            if hasattr(followup, "environment"):
                known = {name for name, _ in run.env}
                extra = self._followup_call(followup, "environment", notice) or ()
                run.env += tuple(pair for pair in extra if pair[0] not in known)

    def _followup_call(self, followup: FollowUp, method: str, *args: Any) -> Any:
        # A follow-up's trouble never stops the hooks.
        try:
            return getattr(followup, method)(*args)
        except Exception as exc:
            self._log.error(
                "followup.failed",
                followup=type(followup).__name__,
                step=method,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False

    def _emit(self, event: str, fields: Mapping[str, Any]) -> None:
        if self._listener is not None:
            self._listener(event, fields)


def _has_news(monitor: Monitor) -> bool:
    news = getattr(monitor, "has_news", None)
    return bool(news()) if callable(news) else False


def _status_note(monitor: Monitor) -> str | None:
    """What a monitor adds to the idle STATUS line (the next planned maintenance)."""
    note = getattr(monitor, "status_note", None)
    return note() if callable(note) else None
