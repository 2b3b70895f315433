"""What the daemon says about the signals it gets, said by the loop, not the handler.

SIGHUP is recorded and logged (``signal.hangup``), and spotwatch keeps running
with the settings it has: they come from the command line and the environment
(the unit's ``Environment=`` lines), which a running process cannot read again,
so a reload is ``systemctl restart spotwatch`` (the journal carries a notice in
progress across it). Before, SIGHUP's default action killed the daemon
mid-hook, silently.

A stop request (SIGTERM, SIGINT) is logged as ``spotwatch.stopping`` when the
loop first sees it, within a second even while a hook runs, not only once the
hook has ended.

The Stopper's handler only counts (see spotwatch.stopper for why); ``report`` is called by
the watch loop between polls and by the hook runner's wait tick.
"""

from __future__ import annotations

from typing import Any

from spotwatch.runner import signal_name
from spotwatch.stopper import Stopper

HANGUP_NOTE = (
    "spotwatch keeps running with the settings it started with; to change them, edit "
    "the unit or its environment and run systemctl restart spotwatch"
)


class SignalNotes:
    """Logs the SIGHUPs the Stopper counted and the first stop request, once each."""

    def __init__(self, stop: Stopper, log: Any) -> None:
        self._stop = stop
        self._log = log
        self._reported_hangups = 0
        self._stop_reported = False

    def report(self, hook_running: str | None = None) -> None:
        """Log what arrived since the last call; ``hook_running`` names the hook now running."""
        hangups = self._stop.hangups
        if hangups != self._reported_hangups:
            self._log.info(
                "signal.hangup",
                received=hangups - self._reported_hangups,
                hook_running=hook_running,
                note=HANGUP_NOTE,
            )
            self._reported_hangups = hangups
        if self._stop.is_set() and not self._stop_reported:
            self._stop_reported = True
            signum = self._stop.signum
            self._log.info(
                "spotwatch.stopping",
                signal=signal_name(signum) if signum is not None else None,
                hook_running=hook_running,
                note="stopping after the running hook; the hooks not started run at the "
                "next start"
                if hook_running
                else "stopping",
            )
