"""Run hooks one at a time, within their time, as real subprocesses.

Each hook runs with argv ``[path]``, stdin ``/dev/null``, cwd ``/`` (so it never
depends on or pins the daemon's working directory), its own session and
process group, and only the file descriptors 0-2. Every line it prints on
stdout or stderr is logged as ``hook.output`` as it arrives, up to a bound: past
its first ``output_head`` lines only the last ``output_tail`` are kept, logged
when it ends after one ``hook.output_truncated`` event counting what was left
out, so a chatty hook cannot push spotwatch's own events past journald's rate
limit (its default: 10,000 messages per 30 s per service). Past its time the
whole process group gets SIGTERM, then SIGKILL after ``kill_grace`` (never past
the deadline). A failing, timed-out or unstartable hook never stops the next.

The clock is passed in; one poll() loop reads both pipes and (where Linux
offers pidfds) waits for the exit, so no threads are involved.
"""

from __future__ import annotations

import codecs
import collections
import errno
import math
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from spotwatch.hooks import Hook, check_hook, default_allowed_uids
from spotwatch.logs import get_logger

OK = "ok"
FAILED = "failed"
TIMED_OUT = "timed-out"
SKIPPED = "skipped"
ERROR = "error"
REFUSED = "refused"

NO_TIME_LEFT = "skipped: no time left before the deadline"

MAX_LINE_CHARS = 8192  # a longer line is logged in pieces of this size
KEPT_LINES = 200  # per hook, for the drill's timeline
OUTPUT_LINGER = 1.0  # seconds to keep reading after a hook exits, if a child holds its pipes
REAP_WAIT = 5.0  # after SIGKILL; only a process stuck in the kernel outlives it
AFTER_KILL_DRAIN = 0.5
HOOK_CWD = "/"
WAIT_TICK = 1.0  # seconds: on_wait runs at least this often while a hook runs
OUTPUT_HEAD = 100  # lines of one hook's output logged as they come...
OUTPUT_TAIL = 100  # ...and the last lines, logged when it ends


@dataclass(frozen=True)
class OutputLine:
    stream: str  # "stdout" or "stderr"
    text: str
    at: float  # wall-clock epoch seconds


@dataclass(frozen=True)
class HookResult:
    """How one hook went. ``description`` says it in words for people."""

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


def run_hooks(
    hooks: Sequence[Hook],
    env: Mapping[str, str],
    *,
    deadline_mono: float | None,
    hook_timeout: float,
    deadline_margin: float = 10.0,
    kill_grace: float = 5.0,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[Hook], None] | None = None,
    on_finish: Callable[[HookResult], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    log: Any = None,
    allowed_uids: frozenset[int] | None = None,
    on_wait: Callable[[], None] | None = None,
    wait_tick: float | None = None,
    output_head: int = OUTPUT_HEAD,
    output_tail: int = OUTPUT_TAIL,
) -> list[HookResult]:
    """Run ``hooks`` in order; return one result per hook whose turn came.

    ``deadline_mono`` is the deadline on ``clock`` (None: no deadline, only
    ``hook_timeout`` applies and SPOTWATCH_SECONDS_LEFT is not set). A hook
    whose turn comes with no time left before ``deadline_mono -
    deadline_margin`` is not started (result ``skipped``). ``should_stop`` is
    asked before each hook; once it says True no further hook starts.
    ``on_start`` runs just after a hook is spawned, ``on_finish`` after every
    result (skipped ones too); an exception in either is logged, not raised.
    ``on_wait`` runs at least every ``wait_tick`` seconds (at most WAIT_TICK)
    while a hook runs: the daemon pings the systemd watchdog from it, so a
    long hook is not mistaken for a hung daemon. The daemon passes half its
    ping interval, so a ping that just missed being due goes out half an
    interval later, not a whole one. ``output_head`` and ``output_tail`` bound
    what one hook puts in the log (see the module's description).
    """
    # Bound once: structlog's lazy proxy would look the configuration up again
    # on every event, and there are two or more events per hook.
    log = (log if log is not None else get_logger()).bind()
    # inherited: listed once per run, not per hook: our own descriptors are never
    # inheritable (PEP 446), so the list only holds what we were started with.
    # poller: one poll set for the run; each hook adds its pipes and pidfd, then
    # removes them. poll() itself, not selectors' wrapper: with three descriptors
    # it is the cheapest, and it is on the path between one hook and the next.
    # devnull: opened once; each spawned hook gets it as stdin by dup2, no open()
    # of its own. Without it (a chroot with no /dev/null) hooks start with Popen,
    # which then fails each hook with a clear reason instead of failing the run.
    spawn = _posix_spawn_fits() and _names_fit(env)
    devnull = -1
    if spawn:
        try:
            devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            spawn = False
    run = _Run(
        log=log,
        clock=clock,
        wall_clock=wall_clock,
        allowed_uids=default_allowed_uids() if allowed_uids is None else allowed_uids,
        kill_grace=kill_grace,
        on_start=on_start,
        on_wait=on_wait,
        wait_tick=WAIT_TICK if wait_tick is None else max(0.01, min(WAIT_TICK, wait_tick)),
        inherited=tuple(_close_inheritable()),
        posix_spawn=spawn,
        poller=select.poll(),
        devnull=devnull,
        output_head=max(0, output_head),
        output_tail=max(0, output_tail),
    )
    try:
        return _run_all(
            hooks, env, run, deadline_mono, hook_timeout, deadline_margin, should_stop, on_finish
        )
    finally:
        if devnull >= 0:
            os.close(devnull)


@dataclass(frozen=True)
class _Run:
    """What every hook of one run_hooks() call shares."""

    log: Any
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    allowed_uids: frozenset[int]
    kill_grace: float
    on_start: Callable[[Hook], None] | None
    on_wait: Callable[[], None] | None
    wait_tick: float
    inherited: tuple[tuple[int, int], ...]
    posix_spawn: bool  # whether hooks start with os.posix_spawn; see _posix_spawn_fits
    poller: select.poll
    devnull: int  # -1 unless posix_spawn
    output_head: int = OUTPUT_HEAD
    output_tail: int = OUTPUT_TAIL


def _run_all(
    hooks: Sequence[Hook],
    env: Mapping[str, str],
    run: _Run,
    deadline_mono: float | None,
    hook_timeout: float,
    deadline_margin: float,
    should_stop: Callable[[], bool],
    on_finish: Callable[[HookResult], None] | None,
) -> list[HookResult]:
    log = run.log
    results: list[HookResult] = []
    for index, hook in enumerate(hooks):
        if should_stop():
            log.warning(
                "hooks.stopped",
                reason="spotwatch is stopping",
                not_started=[h.name for h in hooks[index:]],
            )
            break
        try:
            result = _take_turn(hook, env, run, deadline_mono, hook_timeout, deadline_margin)
        except Exception as exc:
            # A bug of ours must cost one hook, not the rest of them.
            log.exception("hook.runner_error", hook=hook.name)
            wall = run.wall_clock()
            result = HookResult(
                hook.name,
                str(hook.path),
                wall,
                wall,
                ERROR,
                None,
                None,
                f"error: spotwatch failed running it: {exc!r}",
            )
        results.append(result)
        _callback(on_finish, result, log, "on_finish")
    return results


def _take_turn(
    hook: Hook,
    env: Mapping[str, str],
    run: _Run,
    deadline_mono: float | None,
    hook_timeout: float,
    deadline_margin: float,
) -> HookResult:
    log, wall_clock = run.log, run.wall_clock
    now = run.clock()
    hook_env = dict(env)
    timeout = float(hook_timeout)
    kill_limit: float | None = None
    seconds_left: int | None = None
    if deadline_mono is not None:
        budget = deadline_mono - deadline_margin - now
        if budget <= 0:
            log.warning(
                "hook.skipped",
                hook=hook.name,
                reason="no time left before the deadline",
                seconds_to_deadline=round(deadline_mono - now, 1),
                deadline_margin=deadline_margin,
            )
            wall = wall_clock()
            return HookResult(
                hook.name, str(hook.path), wall, wall, SKIPPED, None, None, NO_TIME_LEFT
            )
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
        wall = wall_clock()
        outcome = REFUSED if problem.severity == "refused" else SKIPPED
        level = log.error if outcome == REFUSED else log.warning
        level(
            "hook.refused" if outcome == REFUSED else "hook.skipped",
            hook=hook.name,
            path=str(hook.path),
            reason=problem.reason,
            fix=problem.fix,
        )
        return HookResult(
            hook.name,
            str(hook.path),
            wall,
            wall,
            outcome,
            None,
            None,
            f"{outcome}: {problem.reason} (fix: {problem.fix})",
        )

    def started(pid: int) -> None:
        # Just after the spawn: the hook already runs while it is journaled and logged.
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
    log, clock, wall_clock = run.log, run.clock, run.wall_clock
    path = str(hook.path)
    started_wall = wall_clock()
    started = clock()
    try:
        proc: _Spawned | _PopenHook
        if run.posix_spawn:
            proc = _Spawned(path, env, run.devnull, run.inherited)
        else:
            proc = _PopenHook(path, env)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        description = f"could not start: {_spawn_reason(exc)}"
        log.error(
            "hook.finished",
            hook=hook.name,
            outcome=ERROR,
            description=description,
            exit_code=None,
            signal=None,
            duration=0.0,
        )
        return HookResult(
            hook.name, path, started_wall, wall_clock(), ERROR, None, None, description
        )

    # From here until the session's finally, an exception (Ctrl-C lands anywhere)
    # must not leave the hook running unwatched.
    try:
        session = _Session(proc, hook.name, run)
    except BaseException:
        _kill_unwatched(proc)
        raise
    try:
        started_callback(proc.pid)
        timed_out = not session.run_until(started + timeout, clock)
        if timed_out:
            log.warning(
                "hook.timeout",
                hook=hook.name,
                timeout=round(timeout, 1),
                pid=proc.pid,
                action="SIGTERM to its process group",
            )
            session.kill_group(signal.SIGTERM)
            grace_end = clock() + max(0.0, run.kill_grace)
            if kill_limit is not None:
                grace_end = min(grace_end, kill_limit)
            session.settle(grace_end, clock)
            if session.group_alive():
                log.warning(
                    "hook.kill", hook=hook.name, pid=proc.pid, action="SIGKILL to its process group"
                )
                session.kill_group(signal.SIGKILL)
            session.reap(REAP_WAIT)
            # What the dead group left in the pipes; bounded, as a process that left
            # the group (setsid) may hold them open.
            session.drain(clock() + AFTER_KILL_DRAIN, clock)
        else:
            # It exited; a background child may still hold the pipes.
            session.drain(min(clock() + OUTPUT_LINGER, started + timeout), clock)
            session.reap(REAP_WAIT)
    finally:
        if proc.returncode is None and proc.poll() is None:  # interrupted: Ctrl-C, or a bug
            session.kill_group(signal.SIGKILL)
            session.reap(1.0)
        session.close()

    returncode = proc.returncode
    ended_wall = wall_clock()
    duration = round(clock() - started, 3)
    status = "still running after SIGKILL" if returncode is None else describe_status(returncode)
    if timed_out:
        if returncode is not None and returncode >= 0:
            status = f"{status} after SIGTERM"
        outcome = TIMED_OUT
        description = f"timed out after {timeout:.1f} s ({status})"
    else:
        outcome = OK if returncode == 0 else FAILED
        description = status
    exit_code = returncode if returncode is not None and returncode >= 0 else None
    sig = -returncode if returncode is not None and returncode < 0 else None
    level = log.info if outcome == OK else log.warning
    level(
        "hook.finished",
        hook=hook.name,
        outcome=outcome,
        description=description,
        exit_code=exit_code,
        signal=signal_name(sig) if sig is not None else None,
        duration=duration,
    )
    return HookResult(
        hook.name,
        path,
        started_wall,
        ended_wall,
        outcome,
        exit_code,
        sig,
        description,
        tuple(session.lines),
    )


def _kill_unwatched(proc: Any) -> None:
    """SIGKILL a hook interrupted before its session began, reap it, close its pipes."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass
    proc.close_pipes()


def _posix_spawn_fits() -> bool:
    """posix_spawn cannot chdir, so it starts hooks only where we already are in
    HOOK_CWD (the daemon moves there at start; systemd starts services there).
    It matters on Python 3.9, whose subprocess forks the whole daemon per hook
    (3.10+ uses vfork): 100 trivial hooks took 424 ms with Popen, 161 ms with it."""
    return hasattr(os, "posix_spawn") and os.getcwd() == HOOK_CWD


def _names_fit(env: Mapping[str, str]) -> bool:
    """No name Popen would refuse: empty or with "=" (os.posix_spawn itself only
    refuses "=" after the first character). Checked once per run, not per hook."""
    return all(key and "=" not in key for key in env)


class _HookPipes:
    """A hook's stdout and stderr pipes, as plain descriptors: nothing reads them but
    the session's poll loop, with os.read, so no file objects.

    ``writers`` are our own copies of the pipes' write ends, kept (close-on-exec,
    so no hook inherits them) until the session has seen the hook exit. A hook's
    exit closes its stdout, then its stderr, and only then makes its pidfd
    readable; with the pipes still open at our end, the pidfd alone wakes the
    runner, once instead of up to three times (bench/hooks.py: about 5 % of the
    run with 100 trivial hooks)."""

    out_fd: int
    err_fd: int
    writers: tuple[int, ...]

    def _open_pipes(self) -> tuple[int, int]:
        """Open both pipes; return the write ends, for the hook's 1 and 2."""
        self.out_fd, out_w = os.pipe()
        try:
            self.err_fd, err_w = os.pipe()
        except BaseException:
            os.close(self.out_fd)
            os.close(out_w)
            raise
        self.writers = (out_w, err_w)
        return out_w, err_w

    def close_writers(self) -> None:
        """Let the pipes end once whatever the hook left holding them is gone."""
        writers, self.writers = self.writers, ()
        for fd in writers:
            os.close(fd)

    def close_pipes(self) -> None:
        self.close_writers()
        for fd in (self.out_fd, self.err_fd):
            if fd >= 0:
                os.close(fd)
        self.out_fd = self.err_fd = -1


class _PopenHook(_HookPipes, subprocess.Popen):  # type: ignore[type-arg]
    """A hook started with subprocess.Popen: anywhere, in HOOK_CWD."""

    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        out_w, err_w = self._open_pipes()
        try:
            # Popen leaves descriptors it was given open in the parent: writers stay ours.
            super().__init__(
                [path],
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env=env,
                cwd=HOOK_CWD,
                close_fds=True,
                start_new_session=True,
            )
        except BaseException:
            self.close_pipes()
            raise


class _Spawned(_HookPipes):
    """A hook started with os.posix_spawn (vfork-like in glibc, on Python 3.9 too):
    stdin /dev/null, stdout and stderr to pipes, its own session. It runs in the
    daemon's cwd, so only used when that is HOOK_CWD. The quacks of Popen the
    runner uses: pid, returncode, poll(), wait(), send_signal()."""

    def __init__(
        self,
        path: str,
        env: Mapping[str, str],
        stdin: int,
        inherited: Sequence[tuple[int, int]] = (),
    ) -> None:
        # Names os.posix_spawn lets through and Popen refuses ("=X") never get here:
        # run_hooks checks the environment once and leaves such a run to Popen.
        self.pid = 0
        self.returncode: int | None = None
        out_w, err_w = self._open_pipes()
        try:
            self.pid = os.posix_spawn(
                path,
                [path],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                    *inherited,
                ],
                setsid=True,
            )
        except BaseException:
            # A failed spawn, or Ctrl-C just after one: no hook may run on unwatched.
            if self.pid:
                _kill_unwatched(self)
            else:
                self.close_pipes()
            raise

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0.0)
            time.sleep(delay if end is None else max(0.0, min(delay, end - time.monotonic())))
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


def _close_inheritable() -> list[tuple[int, int]]:
    """Close actions for inheritable fds above 2 (Popen's close_fds; Python's own are
    non-inheritable already, so this is usually empty)."""
    actions = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:
                pass  # the listing's own fd, closed by now
    return actions


def _spawn_reason(exc: Exception) -> str:
    if not isinstance(exc, OSError):
        return str(exc)
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOEXEC:
        return f"{reason} (start the script with a '#!' line, e.g. #!/bin/sh)"
    if exc.errno == errno.ENOENT:
        return f"{reason} (the file, or the interpreter named on its '#!' line, is missing)"
    if exc.errno == errno.EACCES:
        return f"{reason} (check the execute bit and the mount's noexec option)"
    return reason


def _callback(func: Callable[[Any], None] | None, arg: Any, log: Any, which: str) -> None:
    if func is None:
        return
    try:
        func(arg)
    except Exception:
        log.exception("hooks.callback_failed", callback=which)


_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class _LineSplitter:
    """Bytes in, complete lines out; decodes UTF-8 with replacement, caps line length."""

    def __init__(self) -> None:
        # Made on the first bytes: most hooks of a run print nothing on one stream.
        self._decoder: codecs.IncrementalDecoder | None = None
        self._pending = ""

    def feed(self, data: bytes, final: bool = False) -> list[str]:
        if self._decoder is None:
            if not data:
                return []
            self._decoder = _utf8_decoder(errors="replace")
        self._pending += self._decoder.decode(data, final)
        parts = self._pending.split("\n")
        self._pending = parts.pop()
        lines: list[str] = []
        for part in parts:
            lines.extend(_pieces(part.rstrip("\r")))
        while len(self._pending) >= MAX_LINE_CHARS:
            lines.append(self._pending[:MAX_LINE_CHARS])
            self._pending = self._pending[MAX_LINE_CHARS:]
        if final and self._pending:
            lines.extend(_pieces(self._pending.rstrip("\r")))
            self._pending = ""
        return lines


def _live_in_group(pgid: int) -> bool | None:
    """Whether /proc shows a non-zombie process in group ``pgid``; None without /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the name: state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _pieces(line: str) -> list[str]:
    if len(line) <= MAX_LINE_CHARS:
        return [line]
    return [line[i : i + MAX_LINE_CHARS] for i in range(0, len(line), MAX_LINE_CHARS)]


_READABLE = select.POLLIN | select.POLLPRI


class _Session:
    """One running hook: its pipes, its exit, its process group."""

    def __init__(
        self,
        proc: _Spawned | _PopenHook,
        name: str,
        run: _Run,
    ) -> None:
        self.proc = proc
        self.on_wait = run.on_wait
        self.wait_tick = run.wait_tick
        self.name = name
        self.log = run.log
        self.wall_clock = run.wall_clock
        self.pgid = proc.pid  # start_new_session: the hook leads its own group
        self.lines: collections.deque[OutputLine] = collections.deque(maxlen=KEPT_LINES)
        # Lines this hook may still log as they come; past them, the last
        # output_tail wait in `held` (made only then) and the rest are counted.
        self.head_left = self.head_limit = run.output_head
        self.output_tail = run.output_tail
        self.held: collections.deque[tuple[str, str]] | None = None
        self.dropped = 0
        self.poller = run.poller  # shared by the run's hooks, one at a time
        self.exit_seen = False
        # fd -> "stdout"/"stderr" while open; a splitter only once bytes come:
        # most hooks print nothing on at least one of them.
        self.streams: dict[int, str] = {}
        self.splitters: dict[int, _LineSplitter] = {}
        out_fd, err_fd = proc.out_fd, proc.err_fd
        # Left blocking: we only read after poll() says there are bytes or EOF,
        # and we are the pipe's only reader (our end is close-on-exec).
        self.poller.register(out_fd, select.POLLIN)
        self.streams[out_fd] = "stdout"
        self.poller.register(err_fd, select.POLLIN)
        self.streams[err_fd] = "stderr"
        self.pidfd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self.pidfd = pidfd_open(proc.pid)
            except OSError:
                pass
            else:
                self.poller.register(self.pidfd, select.POLLIN)
        if self.pidfd is None:
            # Without a pidfd the pipes' end of file is one of the signs of an exit.
            self.proc.close_writers()

    def exited(self) -> bool:
        """Has the hook exited? Not reaped yet (WNOWAIT): while its zombie exists its pid,
        and so the process group id we signal, cannot be reused by another process."""
        if self.proc.returncode is not None or self.exit_seen:
            return True
        if self.pidfd is not None:
            return False  # it becomes readable at the exit, and _select sets exit_seen
        waitid = getattr(os, "waitid", None)
        if waitid is None:
            return self.proc.poll() is not None
        try:
            info = waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll() is not None
        return info is not None

    def run_until(self, until: float, clock: Callable[[], float]) -> bool:
        """Read output until the hook exits: True, or False if ``until`` came first."""
        while not self.exited():
            if self.on_wait is not None:
                self._tick()
            remaining = until - clock()
            if remaining <= 0:
                return False
            if self.pidfd is None:  # without a pidfd the exit is only seen by polling
                if not self.streams:
                    time.sleep(min(remaining, 0.05))
                    continue
                remaining = min(remaining, 0.05)
            self._select(remaining)
        return True

    def settle(self, until: float, clock: Callable[[], float]) -> None:
        """After SIGTERM: read on until the whole group is gone, at most until ``until``."""
        if not self.run_until(until, clock):
            return
        while self.group_alive():
            self._tick()
            remaining = until - clock()
            if remaining <= 0:
                return
            step = min(remaining, 0.05)
            if self.streams:
                self._select(step)
            else:
                time.sleep(step)

    def drain(self, until: float, clock: Callable[[], float]) -> None:
        """Collect what is left in the pipes, for at most until ``until``."""
        self._unregister_pidfd()
        self.proc.close_writers()
        while self.streams:
            self._tick()
            remaining = until - clock()
            if remaining <= 0:
                self.log.warning(
                    "hook.output_abandoned",
                    hook=self.name,
                    reason="a process the hook started still holds its stdout/stderr",
                    advice="redirect background commands' output, e.g. cmd >/dev/null 2>&1 &",
                )
                return
            self._select(remaining)

    def kill_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # a setuid child; at least the hook itself
            if self.proc.poll() is None:
                self.proc.send_signal(sig)

    def group_alive(self) -> bool:
        """Does any live (non-zombie) process remain in the hook's process group?"""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # Zombies count for kill(); orphans wait for init to reap them, which may be late.
        live = _live_in_group(self.pgid)
        return True if live is None else live

    def reap(self, wait: float) -> None:
        if self.exit_seen and self.proc.poll() is not None:
            return  # the usual case: its pidfd said it exited
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.log.error(
                "hook.unkillable",
                hook=self.name,
                pid=self.proc.pid,
                advice="the process is stuck in the kernel; check dmesg",
            )

    def close(self) -> None:
        # Unregister before closing: the next hook's pipes may get the same numbers.
        for fd in list(self.streams):
            self._finish_stream(fd)
        self._unregister_pidfd()
        self.proc.close_pipes()
        if self.held is not None:
            self._log_held()

    def _unregister_pidfd(self) -> None:
        if self.pidfd is not None:
            self.poller.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def _tick(self) -> None:
        if self.on_wait is not None:
            try:
                self.on_wait()
            except Exception:
                self.log.exception("hooks.callback_failed", callback="on_wait")

    def _select(self, timeout: float) -> None:
        # poll() takes milliseconds and rounds up, so it never returns early.
        for fd, events in self.poller.poll(min(timeout, self.wait_tick) * 1000.0):
            if fd == self.pidfd:
                # pidfd readable: the hook exited. Stop watching it; poll() reaps.
                # Its pipes may now end: at once, unless a child of it holds them.
                self._unregister_pidfd()
                self.proc.close_writers()
                self.exit_seen = True
                continue
            stream = self.streams.get(fd)
            if stream is None:
                continue
            if not events & _READABLE:
                # Linux reports a pipe with no writers left and nothing in it as
                # POLLHUP alone: end of file, no need to read() it to know.
                self._finish_stream(fd)
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                splitter = self.splitters.get(fd)
                if splitter is None:
                    splitter = self.splitters[fd] = _LineSplitter()
                self._emit(stream, splitter.feed(data))
            else:
                self._finish_stream(fd)

    def _finish_stream(self, fd: int) -> None:
        stream = self.streams.pop(fd)
        self.poller.unregister(fd)
        splitter = self.splitters.pop(fd, None)
        if splitter is not None:
            lines = splitter.feed(b"", final=True)
            if lines:
                self._emit(stream, lines)

    def _emit(self, stream: str, lines: list[str]) -> None:
        for text in lines:
            self.lines.append(OutputLine(stream, text, self.wall_clock()))
            if self.head_left > 0:
                self.head_left -= 1
                self.log.info("hook.output", hook=self.name, stream=stream, line=text)
            else:
                self._hold(stream, text)

    def _hold(self, stream: str, text: str) -> None:
        held = self.held
        if held is None:
            held = self.held = collections.deque(maxlen=self.output_tail)
        if len(held) == self.output_tail:
            self.dropped += 1  # the oldest held line (or, with no tail, this one) goes
        held.append((stream, text))

    def _log_held(self) -> None:
        held = self.held or ()
        if self.dropped:
            self.log.warning(
                "hook.output_truncated",
                hook=self.name,
                lines_left_out=self.dropped,
                logged_first=self.head_limit,
                logged_last=len(held),
                advice="to keep all of a hook's output, have it write to a file "
                "(e.g. under $LOGS_DIRECTORY); --hook-output-head/--hook-output-tail "
                "set the bound",
            )
        for stream, text in held:
            self.log.info("hook.output", hook=self.name, stream=stream, line=text)
        self.held = None
