"""Shared helpers for the benchmarks: processes that always get cleaned up, the
daemon's JSON log, /proc readings, percentiles, the result table, the machine.

The benchmarks print figures; they never assert. Run them with the dev venv's
Python from the repository root, e.g. ``.venv/bin/python bench/idle.py``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``spotwatch`` importable from here
    sys.path.insert(0, str(REPO))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = 1024 * 1024  # bytes in a MiB


class BenchError(Exception):
    """The benchmark could not measure what it meant to (printed as one line)."""


# -- clean-up, even on Ctrl-C ----------------------------------------------------


class Cleanup:
    """Owns every process and temp dir a benchmark makes; ``close()`` removes them all.

    Children start in their own session, so a process and whatever it spawned
    (a shell loop's curl, a hook) go down together with one ``killpg``. SIGTERM
    becomes KeyboardInterrupt so the ``finally`` that calls ``close()`` runs.
    """

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._dirs: list[Path] = []
        self._files: list[IO[Any]] = []
        self._callbacks: list[Callable[[], None]] = []

    def __enter__(self) -> Cleanup:
        signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tempdir(self, prefix: str) -> Path:
        # The default temp dir, not a RAM disk on purpose where possible: the
        # journal's fsyncs should cost what they cost on /var/lib.
        path = Path(tempfile.mkdtemp(prefix=f"spotwatch-bench-{prefix}-"))
        path.chmod(0o755)  # hooks directories must not be group/world-writable
        self._dirs.append(path)
        return path

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(list(argv), start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def open(self, path: Path, mode: str) -> IO[Any]:
        handle = open(path, mode)  # noqa: SIM115 - closed in close()
        self._files.append(handle)
        return handle

    def on_close(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def close(self) -> None:
        for proc in reversed(self._procs):
            stop_process(proc)
        for callback in reversed(self._callbacks):
            try:
                callback()
            except Exception:
                pass
        for handle in self._files:
            handle.close()
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._procs.clear()
        self._callbacks.clear()
        self._files.clear()
        self._dirs.clear()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    """``sig`` to the process's whole group, SIGKILL if it lingers; always reaped."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group (a curl, a sleep)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=wait)


def run_main(main: Callable[[], int]) -> None:
    """``sys.exit(main())`` with Ctrl-C and BenchError as one line, not a traceback."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("interrupted; processes stopped and temp dirs removed", file=sys.stderr)
        status = 130
    except BenchError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        status = 1
    sys.exit(status)


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, step: float = 0.01
) -> Any:
    """The test suite's ``wait_until`` (tests/helpers.py), failing with a BenchError
    naming ``what`` (one line, no traceback) after ``timeout`` s."""
    from tests.helpers import WaitTimeout
    from tests.helpers import wait_until as poll

    try:
        return poll(condition, timeout, what, step)
    except WaitTimeout as exc:
        raise BenchError(str(exc)) from None


# -- spotwatch run as a subprocess ---------------------------------------------------


def spotwatch_argv(
    imds_url: str,
    *,
    interval: float,
    hooks_dir: Path,
    state_dir: Path,
    python_flags: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    return [
        sys.executable, *python_flags, "-m", "spotwatch", "run",
        "--imds-url", imds_url,
        "--interval", f"{interval:g}",
        "--hooks-dir", str(hooks_dir),
        "--state-dir", str(state_dir),
        "--log-format", "json",
        *extra,
    ]  # fmt: skip


class Daemon:
    """``spotwatch run`` in its own session; its stderr (JSON log lines) in a file."""

    def __init__(
        self,
        cleanup: Cleanup,
        imds_url: str,
        *,
        interval: float,
        hooks_dir: Path,
        state_dir: Path,
        log_path: Path,
        python_flags: Sequence[str] = (),
        extra: Sequence[str] = (),  # more flags, e.g. --cloud gcp
    ) -> None:
        self.log_path = log_path
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # never talk to a real systemd
        env.setdefault("SPOTWATCH_CLOUD", "aws")  # the AWS simulator unless extra says otherwise
        log = cleanup.open(log_path, "ab")
        argv = spotwatch_argv(
            imds_url,
            interval=interval,
            hooks_dir=hooks_dir,
            state_dir=state_dir,
            python_flags=python_flags,
            extra=extra,
        )
        self.proc = cleanup.popen(argv, cwd=REPO, stdout=log, stderr=log, env=env)
        self._read_upto = 0
        self._events: list[dict[str, Any]] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Log events so far (read incrementally), optionally only those named ``name``."""
        with open(self.log_path, "rb") as handle:
            handle.seek(self._read_upto)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a partly written last line waits for next time
        self._read_upto += end
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._events.append(event)
        return [e for e in self._events if name is None or e.get("event") == name]

    def wait_for_event(
        self, name: str, timeout: float = 20.0, count: int = 1
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            events = self.events(name)
            if len(events) >= count:
                return events
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"spotwatch run exited ({self.proc.returncode}):\n{tail}")
            return None

        return wait_until(found, timeout, f"{count} x {name} from spotwatch run")  # type: ignore[no-any-return]


def log_time(event: Mapping[str, Any]) -> float:
    """The epoch seconds of a structlog ISO timestamp (``...T03:00:00.123456Z``)."""
    stamp = str(event["timestamp"]).replace("Z", "+00:00")
    return _dt.datetime.fromisoformat(stamp).timestamp()


def write_hook(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# -- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of ``pid`` (plus cutime + cstime of its reaped children)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        raw = handle.read()
    fields = raw[raw.rindex(b")") + 2 :].split()  # after "pid (comm) "
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    ticks = utime + stime + (cutime + cstime if children else 0)
    return ticks / CLK_TCK


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, e.g. VmHWM (peak RSS) or VmRSS."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


# -- figures and the table ---------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


class Table:
    """Rows of: metric, spotwatch, baseline, ratio, goal, met?"""

    HEAD = ("metric", "spotwatch", "baseline", "ratio", "goal", "met?")

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, ...]] = []

    def add(
        self,
        metric: str,
        ours: str,
        theirs: str = "-",
        ratio_text: str = "-",
        goal: str = "-",
        met: bool | None = None,
    ) -> None:
        verdict = "-" if met is None else ("yes" if met else "NO")
        self.rows.append((metric, ours, theirs, ratio_text, goal, verdict))

    def render(self) -> str:
        widths = [max(len(r[i]) for r in (self.HEAD, *self.rows)) for i in range(len(self.HEAD))]
        lines = [self.title]
        for n, row in enumerate((self.HEAD, *self.rows)):
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def machine() -> str:
    """One line: date, nproc, CPU model, Python, kernel, load average."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    today = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{today}; {os.cpu_count()} CPUs ({model}); Python {platform.python_version()}; "
        f"Linux {platform.release()}; load average {load}"
    )


def conditions() -> str:
    """How busy the machine was just now: load average and CPU pressure (PSI), if known."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = f"load average {load}"
    try:
        with open("/proc/pressure/cpu") as handle:
            some = handle.readline().split()
        fields = dict(f.split("=", 1) for f in some[1:])
        text += f"; CPU pressure {fields['avg10']}% (10 s), {fields['avg60']}% (60 s)"
    except (OSError, KeyError, ValueError):
        pass
    return text


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} not found: install it (apt-get install {package})")
    return path
