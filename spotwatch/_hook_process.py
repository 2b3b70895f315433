"""How one hook runs as a process: spawn, pipes, process group (the runner's
private half; spotwatch.runner decides whose turn it is and how it went).

A hook starts with argv ``[path]``, stdin ``/dev/null``, cwd ``/``, its own
session and process group, and only the file descriptors 0-2. A Session reads
both pipes and (where Linux offers pidfds) waits for the exit in one poll()
loop, so no threads are involved; it logs each output line as ``hook.output``
up to the run's bound, and kills the whole group when asked.
"""

from __future__ import annotations

import codecs
import collections
import errno
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

MAX_LINE_CHARS = 8192  # a longer line is logged in pieces of this size
KEPT_LINES = 200  # per hook, for the drill's timeline
REAP_WAIT = 5.0  # after SIGKILL; only a process stuck in the kernel outlives it
AFTER_KILL_DRAIN = 0.5
HOOK_CWD = "/"


@dataclass(frozen=True)
class OutputLine:
    stream: str  # "stdout" or "stderr"
    text: str
    at: float  # wall-clock epoch seconds


@dataclass(frozen=True)
class Reading:
    """How a run's sessions read and log their hooks' output."""

    log: Any
    wall_clock: Callable[[], float]
    poller: select.poll  # one set per run; each hook adds its descriptors, then removes them
    on_wait: Callable[[], None] | None
    wait_tick: float
    output_head: int
    output_tail: int


class Spawner:
    """Starts one run's hooks: with os.posix_spawn where it fits, else with Popen.

    Set up once per run, not per hook: the inheritable descriptors to close (our
    own are never inheritable (PEP 446), so the list only holds what we were
    started with), and /dev/null, which each spawned hook gets as stdin by dup2.
    Without /dev/null (a chroot) hooks start with Popen, which then fails each
    hook with a clear reason instead of failing the run."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.inherited = tuple(_close_inheritable())
        self.devnull = -1
        self.posix_spawn = _posix_spawn_fits() and _names_fit(env)
        if self.posix_spawn:
            try:
                self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self.posix_spawn = False

    def spawn(self, path: str, env: Mapping[str, str]) -> _Spawned | _PopenHook:
        if self.posix_spawn:
            return _Spawned(path, env, self.devnull, self.inherited)
        return _PopenHook(path, env)

    def close(self) -> None:
        if self.devnull >= 0:
            os.close(self.devnull)
            self.devnull = -1


def watch(proc: _Spawned | _PopenHook, name: str, reading: Reading) -> Session:
    """A Session for ``proc``, just spawned; if that fails or is interrupted (Ctrl-C
    lands anywhere), the hook is killed rather than left running unwatched."""
    try:
        return Session(proc, name, reading)
    except BaseException:
        _kill_unwatched(proc)
        raise


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


def spawn_reason(exc: Exception) -> str:
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


class Session:
    """One running hook: its pipes, its exit, its process group."""

    def __init__(
        self,
        proc: _Spawned | _PopenHook,
        name: str,
        reading: Reading,
    ) -> None:
        self.proc = proc
        self.on_wait = reading.on_wait
        self.wait_tick = reading.wait_tick
        self.name = name
        self.log = reading.log
        self.wall_clock = reading.wall_clock
        self.pgid = proc.pid  # start_new_session: the hook leads its own group
        self.lines: collections.deque[OutputLine] = collections.deque(maxlen=KEPT_LINES)
        # Lines this hook may still log as they come; past them, the last
        # output_tail wait in `held` (made only then) and the rest are counted.
        self.head_left = self.head_limit = reading.output_head
        self.output_tail = reading.output_tail
        self.held: collections.deque[tuple[str, str]] | None = None
        self.dropped = 0
        self.poller = reading.poller  # shared by the run's hooks, one at a time
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

    def stop_group(self, grace_end: float, clock: Callable[[], float]) -> None:
        """Past its time: SIGTERM to the group, SIGKILL to what is left at ``grace_end``,
        then what the dead group left in the pipes."""
        self.kill_group(signal.SIGTERM)
        self.settle(grace_end, clock)
        if self.group_alive():
            self.log.warning("hook.kill", hook=self.name, pid=self.proc.pid,
                             action="SIGKILL to its process group")  # fmt: skip
            self.kill_group(signal.SIGKILL)
        self.reap(REAP_WAIT)
        # Bounded, as a process that left the group (setsid) may hold the pipes open.
        self.drain(clock() + AFTER_KILL_DRAIN, clock)

    def finish(self, until: float, clock: Callable[[], float]) -> None:
        """It exited: read what is left (a background child may still hold the pipes
        until ``until``), then reap it."""
        self.drain(until, clock)
        self.reap(REAP_WAIT)

    def close(self) -> None:
        """Always last: a hook still running here was interrupted (Ctrl-C, or a bug
        of ours) and is killed; then the descriptors close and held output is logged."""
        if self.proc.returncode is None and self.proc.poll() is None:
            self.kill_group(signal.SIGKILL)
            self.reap(1.0)
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
                self._log_line(stream, text)
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
            self._log_line(stream, text)
        self.held = None

    def _log_line(self, stream: str, text: str) -> None:
        # A line that is a JSON object (a hook's own structured log, such as
        # `spotwatch ship`'s) is logged as that object under "json", so it nests in
        # the JSON log instead of arriving as an escaped string; any other line as
        # "line". The first character decides before any parsing is tried.
        if text[:1] == "{":
            obj = json_object(text)
            if obj is not None:
                self.log.info("hook.output", hook=self.name, stream=stream, json=obj)
                return
        self.log.info("hook.output", hook=self.name, stream=stream, line=text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object, or None if it is anything else. NaN and Infinity
    are refused, so what is logged stays strict JSON."""
    text = text.rstrip()
    if not text.endswith("}"):
        return None
    try:
        obj = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
