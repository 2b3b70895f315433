"""Run hooks one at a time, within their time, as real subprocesses.

This module decides whose turn it is and how a hook went; how one hook runs
as a process (spawn, pipes, process group) is in spotwatch._hook_process.

Each hook runs with argv ``[path]``, stdin ``/dev/null``, cwd ``/`` (so it never
depends on or pins the daemon's working directory), its own session and
process group, and only the file descriptors 0-2. Every line it prints on
stdout or stderr is logged as ``hook.output`` as it arrives, up to a bound: past
its first ``output_head`` lines only the last ``output_tail`` are kept, logged
when it ends after one ``hook.output_truncated`` event counting what was left
out, so a chatty hook cannot push spotwatch's own events past journald's rate
limit (its default: 10,000 messages per 30 s per service). A line that is a
JSON object is logged as that object, under ``json`` instead of ``line``. Past
its time the whole process group gets SIGTERM, then SIGKILL after
``kill_grace`` (never past the deadline). A failing, timed-out or unstartable
hook never stops the next.

The clock is passed in; one poll() loop reads both pipes and (where Linux
offers pidfds) waits for the exit, so no threads are involved.
"""

from __future__ import annotations

import math
import select
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from spotwatch import _hook_process
from spotwatch._hook_process import KEPT_LINES, MAX_LINE_CHARS, OutputLine
from spotwatch.clocks import SYSTEM, Clocks
from spotwatch.hooks import Hook, check_hook, default_allowed_uids

__all__ = [
    "ERROR",
    "FAILED",
    "KEPT_LINES",
    "MAX_LINE_CHARS",
    "NO_TIME_LEFT",
    "OK",
    "REFUSED",
    "SKIPPED",
    "TIMED_OUT",
    "HookResult",
    "HookSettings",
    "OutputLine",
    "RunObserver",
    "describe_status",
    "run_hooks",
    "signal_name",
]

OK = "ok"
FAILED = "failed"
TIMED_OUT = "timed-out"
SKIPPED = "skipped"
ERROR = "error"
REFUSED = "refused"

_NO_TIME = "no time left before the deadline"
NO_TIME_LEFT = f"skipped: {_NO_TIME}"  # the description of a hook skipped for it

OUTPUT_LINGER = 1.0  # seconds to keep reading after a hook exits, if a child holds its pipes
WAIT_TICK = 1.0  # seconds: on_wait runs at least this often while a hook runs
OUTPUT_HEAD = 100  # lines of one hook's output logged as they come...
OUTPUT_TAIL = 100  # ...and the last lines, logged when it ends


@dataclass(frozen=True)
class HookResult:
    """How one hook went. ``description`` says it in words for people.

    Made with the constructor for its outcome: ``finished`` (ok or failed),
    ``timed_out``, ``skipped``, ``refused`` or ``error``."""

    name: str
    path: str
    started_at: float  # wall-clock epoch seconds
    ended_at: float
    outcome: str  # OK, FAILED, TIMED_OUT, SKIPPED, ERROR or REFUSED
    exit_code: int | None
    signal: int | None
    description: str
    output: tuple[OutputLine, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def duration(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    @classmethod
    def finished(
        cls,
        hook: Hook,
        started_at: float,
        ended_at: float,
        returncode: int | None,
        output: tuple[OutputLine, ...] = (),
    ) -> HookResult:
        """It ended in its time: ok with exit 0, failed otherwise."""
        outcome = OK if returncode == 0 else FAILED
        code, sig = _split_status(returncode)
        status = _status_words(returncode)
        return cls(hook.name, str(hook.path), started_at, ended_at, outcome, code, sig, status,
                   output)  # fmt: skip

    @classmethod
    def timed_out(
        cls,
        hook: Hook,
        started_at: float,
        ended_at: float,
        returncode: int | None,
        timeout: float,
        output: tuple[OutputLine, ...] = (),
    ) -> HookResult:
        """Past ``timeout`` seconds; ``returncode`` is how the kill ended it."""
        status = _status_words(returncode)
        if returncode is not None and returncode >= 0:
            status = f"{status} after SIGTERM"
        code, sig = _split_status(returncode)
        return cls(hook.name, str(hook.path), started_at, ended_at, TIMED_OUT, code, sig,
                   f"timed out after {timeout:.1f} s ({status})", output)  # fmt: skip

    @classmethod
    def skipped(cls, hook: Hook, at: float, reason: str) -> HookResult:
        """Not started: ``reason`` says why (no time left, or an unsafe file the rules skip)."""
        return cls(hook.name, str(hook.path), at, at, SKIPPED, None, None, f"skipped: {reason}")

    @classmethod
    def refused(cls, hook: Hook, at: float, reason: str) -> HookResult:
        """Not started: unsafe to run."""
        return cls(hook.name, str(hook.path), at, at, REFUSED, None, None, f"refused: {reason}")

    @classmethod
    def error(cls, hook: Hook, started_at: float, ended_at: float, description: str) -> HookResult:
        """spotwatch could not start it, or failed while running it."""
        return cls(hook.name, str(hook.path), started_at, ended_at, ERROR, None, None, description)


def describe_status(returncode: int) -> str:
    """``exit 3`` or ``killed by SIGKILL``, from a Popen returncode."""
    if returncode == 0:
        return "exit 0"
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    return f"exit {returncode}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _status_words(returncode: int | None) -> str:
    return "still running after SIGKILL" if returncode is None else describe_status(returncode)


def _split_status(returncode: int | None) -> tuple[int | None, int | None]:
    """(exit code, signal number), from a Popen returncode; None where it does not apply."""
    if returncode is None:
        return None, None
    return (returncode, None) if returncode >= 0 else (None, -returncode)


@dataclass(frozen=True)
class HookSettings:
    """How hooks run, the same for every run of a daemon: the time each gets, the
    margin kept before a deadline, the grace between SIGTERM and SIGKILL, how
    much of a hook's output is logged (see the module's description), and whose
    hook files may run (None: the default rule of spotwatch.hooks)."""

    hook_timeout: float = 60.0
    deadline_margin: float = 10.0
    kill_grace: float = 5.0
    output_head: int = OUTPUT_HEAD
    output_tail: int = OUTPUT_TAIL
    allowed_uids: frozenset[int] | None = None


@dataclass(frozen=True)
class RunObserver:
    """What the caller of :func:`run_hooks` hears about a run, every callback optional.

    ``on_spawn`` runs just before a hook starts, with its process group id (its
    pid); ``on_start`` just after; ``on_finish`` after every result (skipped ones
    too); an exception in any of them is logged, not raised. ``on_wait`` runs at
    least every ``wait_tick`` seconds (at most WAIT_TICK) while a hook runs.
    """

    on_start: Callable[[Hook], None] | None = None
    on_finish: Callable[[HookResult], None] | None = None
    on_wait: Callable[[], None] | None = None
    on_spawn: Callable[[Hook, int], None] | None = None
    wait_tick: float | None = None


NO_OBSERVER = RunObserver()


def run_hooks(
    hooks: Sequence[Hook],
    env: Mapping[str, str],
    settings: HookSettings = HookSettings(),
    *,
    deadline_mono: float | None = None,
    should_stop: Callable[[], bool | str] = lambda: False,
    observer: RunObserver = NO_OBSERVER,
    clocks: Clocks = SYSTEM,
) -> list[HookResult]:
    """Run ``hooks`` in order; return one result per hook whose turn came.

    ``deadline_mono`` is the deadline on ``clocks.monotonic`` (None: no deadline, only
    ``settings.hook_timeout`` applies and SPOTWATCH_SECONDS_LEFT is not set). A
    hook whose turn comes with no time left before ``deadline_mono -
    settings.deadline_margin`` is not started (result ``skipped``).
    ``should_stop`` is asked before each hook; once it says True (spotwatch is
    stopping: a warning) or gives a reason (the caller's, logged as info, as the
    caller says what follows) no further hook starts. ``observer`` hears of each
    hook's start and end. The daemon pings the systemd watchdog from its
    ``on_wait``, so a long hook is not mistaken for a hung daemon, and passes
    half its ping interval as ``wait_tick``, so a ping that just missed being
    due goes out half an interval later, not a whole one.
    """
    # Bound once: structlog's lazy proxy would look the configuration up again
    # on every event, and there are two or more events per hook.
    log = clocks.logger().bind()
    clock, wall_clock = clocks.monotonic, clocks.wall
    on_wait, wait_tick = observer.on_wait, observer.wait_tick
    spawner = _hook_process.Spawner(env)
    allowed = settings.allowed_uids
    run = _Run(
        settings=settings,
        deadline_mono=deadline_mono,
        log=log,
        clock=clock,
        wall_clock=wall_clock,
        allowed_uids=default_allowed_uids() if allowed is None else allowed,
        on_start=observer.on_start,
        on_spawn=observer.on_spawn,
        spawner=spawner,
        reading=_hook_process.Reading(
            log=log,
            wall_clock=wall_clock,
            # poll() itself, not selectors' wrapper: with three descriptors it is
            # the cheapest, and it is on the path between one hook and the next.
            poller=select.poll(),
            on_wait=on_wait,
            wait_tick=WAIT_TICK if wait_tick is None else max(0.01, min(WAIT_TICK, wait_tick)),
            output_head=max(0, settings.output_head),
            output_tail=max(0, settings.output_tail),
        ),
    )
    try:
        return _run_all(hooks, env, run, should_stop, observer.on_finish)
    finally:
        spawner.close()


@dataclass(frozen=True)
class _Run:
    """What every hook of one run_hooks() call shares."""

    settings: HookSettings
    deadline_mono: float | None
    log: Any
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    allowed_uids: frozenset[int]
    on_start: Callable[[Hook], None] | None
    on_spawn: Callable[[Hook, int], None] | None
    spawner: _hook_process.Spawner
    reading: _hook_process.Reading


def _run_all(
    hooks: Sequence[Hook],
    env: Mapping[str, str],
    run: _Run,
    should_stop: Callable[[], bool | str],
    on_finish: Callable[[HookResult], None] | None,
) -> list[HookResult]:
    log = run.log
    results: list[HookResult] = []
    for index, hook in enumerate(hooks):
        stop = should_stop()
        if stop:
            said = isinstance(stop, str)
            (log.info if said else log.warning)(
                "hooks.stopped",
                reason=stop if said else "spotwatch is stopping",
                not_started=[h.name for h in hooks[index:]],
            )
            break
        try:
            result = _take_turn(hook, env, run)
        except Exception as exc:
            # A bug of ours must cost one hook, not the rest of them.
            log.exception("hook.runner_error", hook=hook.name)
            wall = run.wall_clock()
            result = HookResult.error(
                hook, wall, wall, f"error: spotwatch failed running it: {exc!r}"
            )
        results.append(result)
        _callback(on_finish, result, log, "on_finish")
    return results


def _take_turn(hook: Hook, env: Mapping[str, str], run: _Run) -> HookResult:
    log, wall_clock, deadline_mono = run.log, run.wall_clock, run.deadline_mono
    margin = run.settings.deadline_margin
    now = run.clock()
    hook_env = dict(env)
    timeout = float(run.settings.hook_timeout)
    kill_limit: float | None = None
    seconds_left: int | None = None
    if deadline_mono is not None:
        budget = deadline_mono - margin - now
        if budget <= 0:
            log.warning(
                "hook.skipped",
                hook=hook.name,
                reason=_NO_TIME,
                seconds_to_deadline=round(deadline_mono - now, 1),
                deadline_margin=margin,
            )
            return HookResult.skipped(hook, wall_clock(), _NO_TIME)
        timeout = min(timeout, budget)
        kill_limit = deadline_mono
        seconds_left = max(0, math.floor(deadline_mono - now))
        hook_env["SPOTWATCH_SECONDS_LEFT"] = str(seconds_left)
    else:
        hook_env.pop("SPOTWATCH_SECONDS_LEFT", None)
    # When this hook gets SIGTERM (epoch seconds): the tighter of its timeout and the
    # deadline less the margin, so a hook can stop cleanly on its own just before.
    hook_env["SPOTWATCH_HOOK_DEADLINE"] = str(math.floor(wall_clock() + timeout))

    # The file may have changed since the plan was made: never run it if unsafe now.
    problem = check_hook(hook.path, run.allowed_uids)
    if problem is not None:
        fields = {"hook": hook.name, "path": str(hook.path), "reason": problem.reason,
                  "fix": problem.fix}  # fmt: skip
        reason = f"{problem.reason} (fix: {problem.fix})"
        if problem.severity == REFUSED:
            log.error("hook.refused", **fields)
            return HookResult.refused(hook, wall_clock(), reason)
        log.warning("hook.skipped", **fields)
        return HookResult.skipped(hook, wall_clock(), reason)

    def started(pid: int) -> None:
        # Just after the spawn: the hook already runs while it is journaled and logged.
        if run.on_spawn is not None:
            try:
                run.on_spawn(hook, pid)  # its own session: the process group id is its pid
            except Exception:
                log.exception("hooks.callback_failed", callback="on_spawn")
        if run.on_start is not None:
            _callback(run.on_start, hook, log, "on_start")
        log.info(
            "hook.started",
            hook=hook.name,
            pid=pid,
            path=str(hook.path),
            seconds_left=seconds_left,
            timeout=round(timeout, 1),
        )

    return _run_one(hook, hook_env, timeout, kill_limit, started, run)


def _run_one(
    hook: Hook,
    env: dict[str, str],
    timeout: float,
    kill_limit: float | None,
    started_callback: Callable[[int], None],
    run: _Run,
) -> HookResult:
    """Start ``hook``, read it until it exits or its ``timeout``; past that, kill its
    group (SIGKILL no later than ``kill_limit``, the deadline, if any)."""
    log, clock, wall_clock = run.log, run.clock, run.wall_clock
    started_wall = wall_clock()
    started = clock()
    try:
        proc = run.spawner.spawn(str(hook.path), env)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        reason = _hook_process.spawn_reason(exc)
        result = HookResult.error(hook, started_wall, wall_clock(), f"could not start: {reason}")
        _log_finished(log, result, 0.0)
        return result

    session = _hook_process.watch(proc, hook.name, run.reading)
    try:
        started_callback(proc.pid)
        timed_out = not session.run_until(started + timeout, clock)
        if timed_out:
            log.warning("hook.timeout", hook=hook.name, timeout=round(timeout, 1), pid=proc.pid,
                        action="SIGTERM to its process group")  # fmt: skip
            grace_end = clock() + max(0.0, run.settings.kill_grace)
            session.stop_group(grace_end if kill_limit is None else min(grace_end, kill_limit),
                               clock)  # fmt: skip
        else:
            session.finish(min(clock() + OUTPUT_LINGER, started + timeout), clock)
    finally:
        session.close()

    ended_wall = wall_clock()
    duration = round(clock() - started, 3)
    output = tuple(session.lines)
    if timed_out:
        result = HookResult.timed_out(hook, started_wall, ended_wall, proc.returncode, timeout,
                                      output)  # fmt: skip
    else:
        result = HookResult.finished(hook, started_wall, ended_wall, proc.returncode, output)
    _log_finished(log, result, duration)
    return result


def _log_finished(log: Any, result: HookResult, duration: float) -> None:
    level = log.info if result.ok else log.error if result.outcome == ERROR else log.warning
    level(
        "hook.finished",
        hook=result.name,
        outcome=result.outcome,
        description=result.description,
        exit_code=result.exit_code,
        signal=signal_name(result.signal) if result.signal is not None else None,
        duration=duration,
    )


def _callback(func: Callable[[Any], None] | None, arg: Any, log: Any, which: str) -> None:
    if func is None:
        return
    try:
        func(arg)
    except Exception:
        log.exception("hooks.callback_failed", callback=which)
