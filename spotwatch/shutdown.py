"""Is this SIGTERM a system shutdown, or an operator stopping spotwatch?

A system shutdown (poweroff, reboot, halt, kexec) is often the only notice the
instance gets: Google's preemption is an ACPI soft-off, an EC2 terminate from
the API or a scale-in without a lifecycle hook is announced by nothing else. On
one, spotwatch runs the hooks; on an operator's stop (``systemctl stop`` or
``restart``, a package upgrade) it stops as always.

How it tells them apart: the queued shutdown job. ``systemctl poweroff`` (and
logind's power key, which is what Google's ACPI soft-off ends in) enqueues a
start job for ``poweroff.target`` (``reboot.target``, ``halt.target``,
``kexec.target``) in the same transaction as the stop jobs of every service, so
by the time SIGTERM reaches spotwatch, ``systemctl list-jobs`` lists it, and
names which kind. ``systemctl is-system-running`` says ``stopping`` for a
shutdown whose target it cannot name (then ``unknown``). Neither needs a
running D-Bus or a long-lived lock, and neither delays a shutdown: a logind
delay inhibitor would, and holds it at most ``InhibitDelayMaxSec`` (5 s by
default), far less than the hooks need.

Under systemd (``INVOCATION_ID`` set, as systemd sets it for every service),
where neither answers, spotwatch counts it as a shutdown: better a hook run
than logs lost. Outside systemd (a terminal, a container without systemd, a
test) SIGTERM and Ctrl-C are an operator's stop.

``classify`` is pure; ``probe_systemd`` runs the two ``systemctl`` calls.
``stop_timeout`` reads the unit's ``TimeoutStopUSec`` from systemd, the one
place it is written.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from spotwatch.notice import Notice

SHUTDOWN_EVENT = "shutdown"
# SPOTWATCH_SHUTDOWN values.
KINDS = ("poweroff", "reboot", "halt", "kexec")
UNKNOWN = "unknown"
SHUTDOWN_TARGETS = {f"{kind}.target": kind for kind in KINDS}
# systemd's DefaultTimeoutStopSec, when the unit's own cannot be read.
DEFAULT_STOP_TIMEOUT = 90.0
# Kept back from systemd's SIGKILL: spotwatch's own last journal write and exit.
EXIT_RESERVE = 2.0
SYSTEMCTL_TIMEOUT = 2.0


@dataclass(frozen=True)
class StopKind:
    """What a stop request turned out to be. ``shutdown`` None: an operator's stop."""

    shutdown: str | None  # poweroff, reboot, halt, kexec, unknown; None: not a shutdown
    how: str  # why, for the log

    @property
    def is_shutdown(self) -> bool:
        return self.shutdown is not None


def under_systemd(environ: Mapping[str, str]) -> bool:
    """Started as a systemd service: systemd sets INVOCATION_ID for each (v232+)."""
    return bool(environ.get("INVOCATION_ID"))


def classify(under: bool, jobs: str | None, system_state: str | None) -> StopKind:
    """Pure: from ``systemctl list-jobs`` output and ``is-system-running`` (None: could
    not ask), what the stop is."""
    if not under:
        return StopKind(None, "not under systemd: a signal is an operator's stop")
    if jobs is not None:
        for line in jobs.splitlines():
            for word in line.split():
                kind = SHUTDOWN_TARGETS.get(word)
                if kind is not None:
                    return StopKind(kind, f"systemd has a job queued for {word}")
    state = (system_state or "").strip()
    if state == "stopping":
        return StopKind(UNKNOWN, "systemctl is-system-running says stopping")
    if jobs is not None and state:
        return StopKind(None, f"no shutdown job queued and the system is {state}")
    return StopKind(UNKNOWN, "systemd could not be asked; counted as a shutdown")


def _systemctl(*args: str) -> str | None:
    """stdout of ``systemctl args`` (any exit status: is-system-running exits 1 while
    stopping), or None when it cannot run or hangs."""
    try:
        result = subprocess.run(
            ["systemctl", *args],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0 and not result.stdout.strip():
        return None
    return result.stdout


def probe_systemd(environ: Mapping[str, str] = os.environ) -> StopKind:
    """Ask systemd, now, whether it is shutting down (see the module's description)."""
    if not under_systemd(environ):
        return classify(False, None, None)
    jobs = _systemctl("list-jobs", "--no-legend", "--no-pager")
    state = _systemctl("is-system-running")
    return classify(True, jobs, state)


_UNIT = re.compile(r"/([^/]+\.service)$")


def own_unit(cgroup: Path = Path("/proc/self/cgroup")) -> str | None:
    """The service spotwatch runs in, from its cgroup (``.../spotwatch.service``)."""
    try:
        lines = cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        match = _UNIT.search(line.strip())
        if match:
            return match.group(1)
    return None


def parse_usec(text: str | None) -> float | None:
    """``TimeoutStopUSec`` as ``systemctl show --value`` prints it: ``2min 30s``,
    ``150000000`` with ``--timestamp``-less old versions, or ``infinity``; seconds."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if text == "infinity":
        return float("inf")
    if text.isdigit():
        return int(text) / 1_000_000
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    total = 0.0
    found = False
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]+)", text):
        if unit not in units:
            return None
        total += float(number) * units[unit]
        found = True
    return total if found else None


def stop_timeout(unit: str | None) -> float | None:
    """The unit's TimeoutStopSec in seconds, as systemd has it; None when unknown."""
    if unit is None:
        return None
    return parse_usec(_systemctl("show", "-p", "TimeoutStopUSec", "--value", unit))


def shutdown_deadline(
    stopped_at: float, timeout: float | None, *, cloud: str, margin_reserve: float = EXIT_RESERVE
) -> float:
    """Epoch second by which a shutdown run must be over: systemd's stop time less a
    small reserve for spotwatch's exit, and at most what ``cloud`` allows a shutdown
    (Google: 30 s from the soft-off)."""
    from spotwatch.clouds import registry

    allowed = DEFAULT_STOP_TIMEOUT if timeout is None else timeout
    deadline = stopped_at + max(0.0, min(allowed, 86400.0) - margin_reserve)
    cap = registry.get(cloud).shutdown_seconds
    if cap is not None:
        deadline = min(deadline, stopped_at + cap)
    return deadline


LAST_CHECK_SECONDS = 1.0


class SystemShutdown:
    """The watcher's ShutdownLink for ``spotwatch run``: asks systemd (see the module's
    description), reads the unit's stop timeout, and makes the last check."""

    def __init__(
        self,
        *,
        signals: Callable[[], int],
        cloud: str,
        runs_hooks: bool,
        environ: Mapping[str, str] = os.environ,
        probe: Callable[[Mapping[str, str]], StopKind] = probe_systemd,
        timeout: Callable[[], float | None] | None = None,
        log: Any = None,
    ) -> None:
        self.runs_hooks = runs_hooks
        self._signals = signals
        self._cloud = cloud
        self._environ = environ
        self._probe = probe
        self._timeout = timeout if timeout is not None else lambda: stop_timeout(own_unit())
        self._log = log

    def classify(self) -> StopKind:
        return self._probe(self._environ)

    def deadline(self, stopped_at: float) -> float:
        return shutdown_deadline(stopped_at, self._timeout(), cloud=self._cloud)

    def forced(self) -> bool:
        return self._signals() >= 2

    def last_check(self, monitors: Sequence[Any]) -> list[Notice]:
        return last_check(monitors, LAST_CHECK_SECONDS)


def last_check(monitors: Sequence[Any], budget: float) -> list[Notice]:
    """Every monitor's answer, asked at once, within ``budget`` seconds in all: a monitor
    that fails or has not answered by then gives nothing (its thread is left to end)."""
    found: list[Notice | None] = [None] * len(monitors)

    def ask(index: int, monitor: Any) -> None:
        try:
            found[index] = monitor.check()
        except Exception:
            found[index] = None

    threads = [
        threading.Thread(target=ask, args=(i, m), name=f"last-check:{m.name}", daemon=True)
        for i, m in enumerate(monitors)
    ]
    end = time.monotonic() + budget
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return [n for i, n in enumerate(found) if n is not None and not threads[i].is_alive()]
