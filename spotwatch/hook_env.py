"""The environment hooks run in: spotwatch's own, minus what is not theirs, plus the event.

Both kinds of hook get theirs from ``hook_environment``: the instance's
(``spotwatch run``: ``hooks.notice_environment``) and the fleet's
(``spotwatch fleet watch``: ``fleet_events.event_environment``). Each kind
names the variables it sets; inherited values of those are stale (a hook's
``spotwatch run`` inside a drill, a test harness) and are dropped first.
``environ_for_hooks`` adds SPOTWATCH_BIN once at start: systemd's PATH may not
reach a pipx or venv install, and the example hooks call ``spotwatch ship``.
"""

from __future__ import annotations

from collections.abc import Mapping

from spotwatch.errors import SpotwatchError
from spotwatch.script_path import find_spotwatch

# systemd's link to the daemon: a notify-aware program started by a hook must
# not talk to systemd on the daemon's behalf.
DAEMON_ONLY_VARIABLES = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


def hook_environment(
    base_env: Mapping[str, str], variables: Mapping[str, str], replaces: frozenset[str]
) -> dict[str, str]:
    """``base_env`` without the daemon's systemd variables and the stale ``replaces``,
    plus ``variables``."""
    env = {
        k: v for k, v in base_env.items() if k not in replaces and k not in DAEMON_ONLY_VARIABLES
    }
    env.update(variables)
    return env


def environ_for_hooks(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus SPOTWATCH_BIN, the installed spotwatch, for hooks that call it
    (``spotwatch ship``): systemd's PATH may not reach a pipx or venv install."""
    out = dict(environ)
    if "SPOTWATCH_BIN" not in out:
        try:
            out["SPOTWATCH_BIN"] = find_spotwatch()
        except SpotwatchError:
            pass
    return out
