"""Fakes for the watch loop on a fake clock (a Harness around the real Watcher; no
sleeping, no network, no processes), shared by test_watcher, test_fold, test_metrics
and test_feed. No tests here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotwatch.clocks import Clocks
from spotwatch.clouds.metadata_http import ImdsError
from spotwatch.monitor import MonitorBase
from spotwatch.notice import REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION, Identity, Notice
from spotwatch.runner import HookSettings
from spotwatch.watcher import HookWork, Watcher, WatcherLinks, WatchSettings, WatchSources


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class FakeStop:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.flag = False
        self.slept: list[float] = []

    def is_set(self) -> bool:
        return self.flag

    def wait(self, seconds: float | None = None) -> bool:
        assert seconds is not None
        self.slept.append(seconds)
        self.clock.advance(seconds)
        return self.flag


class Fault(ImdsError):
    def __init__(self, kind: str) -> None:
        super().__init__(kind, f"simulated {kind}", "do something")


class ScriptedMonitor(MonitorBase):
    """Answers from a script, one entry per poll; each poll takes ``cost`` seconds."""

    def __init__(self, name: str, clock: FakeClock, script: list[Any], cost: float = 0.3) -> None:
        self.name = name
        self.clock = clock
        self.script = list(script)
        self.cost = cost
        self.calls: list[float] = []

    def check(self) -> Notice | None:
        self.calls.append(self.clock.mono)
        self.clock.advance(self.cost)
        item = self.script.pop(0) if self.script else None
        if isinstance(item, Exception):
            raise item
        return item


@dataclass(frozen=True)
class FakeHook:
    name: str
    path: Path


@dataclass(frozen=True)
class FakeResult:
    name: str
    ok: bool = True


@dataclass(frozen=True)
class FakePlan:
    directory: Path
    hooks: tuple[FakeHook, ...]
    rejected: tuple[Any, ...] = ()
    problem: str | None = None
    fix: str = ""
    missing: bool = False

    @property
    def warnings(self) -> tuple[Any, ...]:
        return self.rejected


@dataclass
class FakeJournal:
    finished: dict[str, list[str]] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)
    begun: list[str] = field(default_factory=list)
    begun_notices: list[Notice] = field(default_factory=list)

    def pending_hooks(self, notice: Notice, hooks: Any) -> list[Any]:
        if notice.id in self.completed:
            return []
        done = self.finished.get(notice.id, [])
        return [h for h in hooks if h.name not in done]

    def begin(self, notice: Notice) -> None:
        self.begun.append(notice.id)
        self.begun_notices.append(notice)

    def hook_started(self, notice_id: str, name: str, group: Any = None) -> None:
        pass

    def running_hook(self, notice_id: str) -> str | None:
        return None

    def running_group(self, notice_id: str) -> Any:
        return None

    def hook_finished(self, notice_id: str, result: Any) -> None:
        self.finished.setdefault(notice_id, []).append(result.name)

    def complete(self, notice_id: str) -> None:
        self.completed.add(notice_id)

    def is_complete(self, notice_id: str) -> bool:
        return notice_id in self.completed

    def unfinished(self, now: float) -> list[Notice]:
        return [n for n in self.begun_notices if n.id not in self.completed and n.deadline > now]

    folds: dict[str, str] = field(default_factory=dict)
    deadlines: dict[str, float] = field(default_factory=dict)

    def end_in_progress(self, now: float) -> Notice | None:
        for n in reversed(self.begun_notices):
            deadline = self.deadlines.get(n.id, n.deadline)
            if n.ends_instance and n.id not in self.folds and deadline > now:
                return n
        return None

    def folded_into(self, notice_id: str) -> str | None:
        return self.folds.get(notice_id)

    def finished_hooks(self, notice_id: str) -> dict[str, dict[str, Any]]:
        return {name: {"outcome": "ok"} for name in self.finished.get(notice_id, [])}

    def fold(self, notice: Notice, into: str) -> None:
        self.folds[notice.id] = into
        self.completed.add(notice.id)
        owner = next(n for n in self.begun_notices if n.id == into)
        self.deadlines[into] = min(self.deadlines.get(into, owner.deadline), notice.deadline)


class FakeNotifier:
    def __init__(self, clock: FakeClock, watchdog: float | None = None) -> None:
        self.clock = clock
        self.messages: list[str] = []
        self.pings: list[float] = []
        self._watchdog = watchdog

    def ready(self, status: str | None = None) -> None:
        self.messages.append("READY=1")

    def status(self, text: str) -> None:
        self.messages.append("STATUS=" + text)

    def stopping(self, status: str | None = None) -> None:
        self.messages.append("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        return self._watchdog

    def watchdog_if_due(self) -> None:
        if self._watchdog is None:
            return
        if not self.pings or self.clock.mono - self.pings[-1] >= self._watchdog:
            self.pings.append(self.clock.mono)


def notice(
    kind: str = SPOT_INTERRUPTION,
    nid: str = "n1",
    lead: float = 120.0,
    clock: FakeClock | None = None,
) -> Notice:
    wall = clock.wall if clock else 1_800_000_000.0
    return Notice(
        kind=kind,
        action="terminate",
        raw_time="2027-01-15T08:00:00Z",
        time=wall + lead,
        deadline=wall + lead,
        id=nid,
        source="test",
        ends_instance=kind != REBALANCE_RECOMMENDATION,
    )


class Harness:
    def __init__(
        self,
        scripts: dict[str, list[Any]],
        *,
        hooks: tuple[str, ...] = ("10-a", "20-b"),
        stop_after_polls: int | None = None,
        max_notices: int | None = None,
        watchdog: float | None = None,
        stop_in_hook: str | None = None,
        followups: tuple[Any, ...] = (),
        shutdown: Any = None,
        boot: Any = None,
        resume_hooks: tuple[str, ...] | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.stop = FakeStop(self.clock)
        self.journal = FakeJournal()
        self.notifier = FakeNotifier(self.clock, watchdog)
        self.monitors = [ScriptedMonitor(n, self.clock, s) for n, s in scripts.items()]
        self.hooks = tuple(FakeHook(h, Path("/hooks") / h) for h in hooks)
        self.resume_hooks = tuple(FakeHook(h, Path("/resume") / h) for h in resume_hooks or ())
        self.runs: list[dict[str, Any]] = []
        self.stop_answers: list[bool | str] = []  # should_stop's answers that stopped a run
        self.stop_after_polls = stop_after_polls
        self.stop_in_hook = stop_in_hook
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.watcher = Watcher(
            WatchSettings(
                interval=5.0,
                hooks_dir=Path("/hooks"),
                hooks=HookSettings(hook_timeout=30.0, deadline_margin=10.0),
                max_notices=max_notices,
                resume_dir=Path("/resume") if resume_hooks is not None else None,
            ),
            sources=WatchSources(
                monitors=self.monitors,
                read_identity=lambda: Identity(instance_id="i-0abc"),
                fault_types=(Fault,),
                followups=followups,
            ),
            hooks=HookWork(
                plan=lambda d: FakePlan(
                    d, self.resume_hooks if d == Path("/resume") else self.hooks
                ),
                runner=self.run_hooks,
                hook_environment=lambda base, n, ident, drill=False: {
                    "SPOTWATCH_NOTICE_ID": n.id,
                    "SPOTWATCH_INSTANCE_ID": ident.instance_id,
                    "SPOTWATCH_EVENT": n.kind,
                    "SPOTWATCH_ACTION": n.action,
                    "SPOTWATCH_DEADLINE": str(int(n.deadline)),
                    **dict(n.env),
                },
                journal=self.journal,
                environ={},
            ),
            links=WatcherLinks(
                stop=self.stop,
                notifier=self.notifier,
                listener=lambda e, f: self.events.append((e, dict(f))),
                shutdown=shutdown,
                boot=boot,
            ),
            clocks=Clocks(monotonic=lambda: self.clock.mono, wall=lambda: self.clock.wall),
        )
        original = self.watcher.poll_once

        def counted_poll() -> list[Notice]:
            result = original()
            if self.stop_after_polls is not None and self.watcher.polls >= self.stop_after_polls:
                self.stop.flag = True
            return result

        self.watcher.poll_once = counted_poll  # type: ignore[method-assign]

    def run_hooks(self, hooks: list[Any], env: dict[str, str], **kw: Any) -> list[Any]:
        # The observer's callbacks recorded as keywords of their own, as tests read them.
        observer = kw.pop("observer")
        kw.update({f.name: getattr(observer, f.name) for f in dataclasses.fields(observer)})
        self.runs.append({"hooks": [h.name for h in hooks], "env": env, **kw})
        results = []
        for hook in hooks:
            stop = kw["should_stop"]()
            if stop:
                self.stop_answers.append(stop)
                break
            kw["on_start"](hook)
            self.clock.advance(2.0)
            if hook.name == self.stop_in_hook:
                self.stop.flag = True
            result = FakeResult(hook.name)
            kw["on_finish"](result)
            results.append(result)
        return results
