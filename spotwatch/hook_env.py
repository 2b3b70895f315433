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

import os
import sys
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
    plus ``variables``, each made fit for an environment (``env_value``)."""
    env = {
        k: v for k, v in base_env.items() if k not in replaces and k not in DAEMON_ONLY_VARIABLES
    }
    for name, value in variables.items():
        clean, why = env_value(value)
        if why:
            _log_cleaned(name, why)
        env[name] = clean
    return env


def env_value(value: str) -> tuple[str, str]:
    """``value`` as something execve accepts, and what was removed ("" when nothing). Pure.

    The values come from metadata servers; a NUL byte (execve ends a string
    there, Python refuses it) or a character the file system encoding cannot
    carry (a lone surrogate from a JSON ``\\ud800``) would stop every hook from
    starting. NULs are dropped, the others become ``?``.
    """
    problems = []
    if "\0" in value:
        value = value.replace("\0", "")
        problems.append("NUL bytes dropped")
    try:
        os.fsencode(value)
    except UnicodeError:
        encoding = sys.getfilesystemencoding()
        value = value.encode(encoding, "replace").decode(encoding, "replace")
        problems.append(f"characters {encoding} cannot carry replaced by '?'")
    return value, "; ".join(problems)


# Variables whose cleaning was logged: once per name for the daemon's life (the
# identity is cached, so the same value comes back at every notice).
_CLEANED_LOGGED: set[str] = set()


def _log_cleaned(name: str, why: str) -> None:
    if name in _CLEANED_LOGGED:
        return
    _CLEANED_LOGGED.add(name)
    from spotwatch.logs import get_logger

    get_logger().warning(
        "hook_env.value_cleaned",
        variable=name,
        what=why,
        note="the metadata server sent a value no environment can hold; hooks get the "
        "cleaned value (logged once per variable)",
    )


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
