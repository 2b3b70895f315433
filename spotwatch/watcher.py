"""The watch loop: poll every monitor on a fixed tick, hand new notices to the hooks.

Everything with a side effect is passed in (monitors, journal, hook planning and
running, clocks, the stop flag, the systemd notifier), so the loop runs in tests
with fakes and in ``spotwatch run`` and ``spotwatch drill`` with the real things.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from spotwatch import faults
from spotwatch.logs import get_logger
from spotwatch.notice import SPOT_INTERRUPTION, Identity, Notice
from spotwatch.schedule import deadline_on_monotonic, next_tick

if TYPE_CHECKING:
    from spotwatch.hooks import Hook, HookPlan
    from spotwatch.runner import HookResult


class Monitor(Protocol):
    name: str

    def check(self) -> Notice | None: ...


class StopFlag(Protocol):
    def is_set(self) -> bool: ...

    def sleep(self, seconds: float) -> bool: ...


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


IDENTITY_RETRY_SECONDS = 60.0

# Called with (event name, fields) for what the drill shows on its timeline.
Listener = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class WatchSettings:
    interval: float
    hooks_dir: Path
    hook_timeout: float
    deadline_margin: float
    drill: bool = False
    max_notices: int | None = None  # stop after handling this many (the drill: 1)


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
    ) -> None:
        self.settings = settings
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
            self._stop.sleep(remaining if ping is None else min(remaining, ping / 2))

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
        for monitor in self._monitors:
            try:
                notice = monitor.check()
            except self._fault_types as exc:
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
                and self._clock() >= self._identity_retry_at
            ):
                self._try_identity()
            return seen
        # An interruption outranks a rebalance recommendation seen in the same poll.
        seen.sort(key=lambda n: n.kind != SPOT_INTERRUPTION)
        for notice in seen:
            if self._stop.is_set():
                break
            if notice.id in self._handled or self._journal.is_complete(notice.id):
                continue
            self.handle(notice)
        return seen

    def _idle_status(self) -> str:
        if self._faults.states:
            kinds = sorted({s.kind or "?" for s in self._faults.states.values()})
            return f"watching; IMDS fault: {', '.join(kinds)}"
        stamp = time.strftime("%H:%M:%SZ", time.gmtime(self._wall()))
        return f"watching; last poll {stamp}: no notice"

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
    def handle(self, notice: Notice) -> list[HookResult]:
        """Run the hooks still due for ``notice``, journaling each, within its deadline."""
        wall_now, mono_now = self._wall(), self._clock()
        deadline_mono = deadline_on_monotonic(notice.deadline, wall_now, mono_now)
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
        identity = self._try_identity()

        plan = self._plan(self.settings.hooks_dir)
        self._log_plan(plan)
        pending = self._journal.pending_hooks(notice, plan.hooks)
        skipped = len(plan.hooks) - len(pending)
        if skipped:
            self._log.info("journal.resumed", notice_id=notice.id, already_done=skipped)
        self._journal.begin(notice)
        env = self._hook_environment(self._environ, notice, identity, drill=self.settings.drill)
        self._notifier.status(f"{notice.kind} {notice.action}: running {len(pending)} hooks")

        def on_start(hook: Hook) -> None:
            self._journal.hook_started(notice.id, hook.name)
            self._notifier.status(f"{notice.kind} {notice.action}: running {hook.name}")
            self._notifier.watchdog_if_due()
            self._emit("hook.started", {"hook": hook.name})

        def on_finish(result: HookResult) -> None:
            self._journal.hook_finished(notice.id, result)
            self._notifier.watchdog_if_due()
            self._emit("hook.finished", {"hook": result.name, "result": result})

        superseded = False

        def should_stop() -> bool:
            # Between the hooks of a rebalance recommendation, which may take long,
            # an interruption notice must not wait: it cuts them short.
            nonlocal superseded
            if self._stop.is_set():
                return True
            if notice.kind != SPOT_INTERRUPTION and self._interruption_pending():
                superseded = True
            return superseded

        results = self._runner(
            pending,
            env,
            deadline_mono=deadline_mono,
            hook_timeout=self.settings.hook_timeout,
            deadline_margin=self.settings.deadline_margin,
            should_stop=should_stop,
            on_start=on_start,
            on_finish=on_finish,
            clock=self._clock,
            wall_clock=self._wall,
            on_wait=self._notifier.watchdog_if_due,
            wait_tick=self._wait_tick(),
        )
        self.last_results = results
        interrupted = len(results) < len(pending)
        if superseded:
            self._log.warning(
                "notice.superseded",
                notice_id=notice.id,
                kind=notice.kind,
                done=len(results),
                left=len(pending) - len(results),
                note="a spot interruption notice came; its hooks run now instead",
            )
            self._journal.complete(notice.id)
            self._handled.add(notice.id)
            self._poll_now = True
            return results
        if interrupted:
            # Stopped between hooks: the journal keeps the rest for the next start.
            self._log.warning(
                "notice.interrupted",
                notice_id=notice.id,
                done=len(results),
                left=len(pending) - len(results),
                note="the remaining hooks run when spotwatch starts again",
            )
            return results
        self._journal.complete(notice.id)
        self._handled.add(notice.id)
        self.notices_handled += 1
        failed = [r.name for r in results if not r.ok]
        left = round(deadline_mono - self._clock(), 1)
        self._log.log(
            30 if failed else 20,
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

    def _interruption_pending(self) -> bool:
        """A quick look for a spot interruption notice not yet handled."""
        for monitor in self._monitors:
            if monitor.name != SPOT_INTERRUPTION:
                continue
            try:
                found = monitor.check()
            except self._fault_types:
                return False  # the next poll logs the fault
            if found is not None and found.id not in self._handled:
                return not self._journal.is_complete(found.id)
        return False

    def _log_plan(self, plan: HookPlan) -> None:
        if plan.problem:
            self._log.error("hooks.refused", directory=str(plan.directory), problem=plan.problem)
        for item in plan.rejected:
            level = {"refused": 40, "skipped": 30}.get(item.severity, 10)
            self._log.log(
                level,
                f"hook.{item.severity}",
                hook=item.name,
                reason=item.reason,
                fix=item.fix,
            )

    def _emit(self, event: str, fields: Mapping[str, Any]) -> None:
        if self._listener is not None:
            self._listener(event, fields)
