"""The environment hooks run in (spotwatch/hook_env.py); each kind's variables are
tested with it (test_hooks.py for the instance's, test_fleet_events.py for the fleet's)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from spotwatch.hook_env import environ_for_hooks, hook_environment


def test_hook_environment_drops_stale_and_daemon_values_and_sets_the_new() -> None:
    base = {
        "PATH": "/usr/bin",
        "SPOTWATCH_BIN": "/opt/spotwatch/bin/spotwatch",  # configuration: kept
        "SPOTWATCH_EVENT": "stale",
        "SPOTWATCH_OLD": "stale too",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "1",
    }
    replaces = frozenset({"SPOTWATCH_EVENT", "SPOTWATCH_OLD"})
    env = hook_environment(base, {"SPOTWATCH_EVENT": "new"}, replaces)
    assert env == {
        "PATH": "/usr/bin",
        "SPOTWATCH_BIN": "/opt/spotwatch/bin/spotwatch",
        "SPOTWATCH_EVENT": "new",
    }
    assert base["SPOTWATCH_EVENT"] == "stale"  # the daemon's own is not changed


def test_environ_for_hooks_adds_this_spotwatch_unless_set() -> None:
    env = environ_for_hooks({"PATH": "/usr/bin"})
    assert env["SPOTWATCH_BIN"] == str(Path(sys.executable).parent / "spotwatch")
    assert os.access(env["SPOTWATCH_BIN"], os.X_OK)
    assert environ_for_hooks({"SPOTWATCH_BIN": "/x"}) == {"SPOTWATCH_BIN": "/x"}


def test_values_no_environment_can_hold_are_cleaned_every_time_and_logged_once() -> None:
    from structlog.testing import capture_logs

    from spotwatch import hook_env as he

    he._CLEANED_LOGGED.discard("SPOTWATCH_TEST_ID")
    with capture_logs() as logs:
        for _ in range(3):  # the identity is cached: the same value at every notice
            env = he.hook_environment(
                {"PATH": "/bin"}, {"SPOTWATCH_TEST_ID": "i-0\x00x\ud800"}, frozenset()
            )
            assert env["SPOTWATCH_TEST_ID"] == "i-0x?"
            os.fsencode(env["SPOTWATCH_TEST_ID"])
    cleaned = [e for e in logs if e["event"] == "hook_env.value_cleaned"]
    assert len(cleaned) == 1
    assert cleaned[0]["variable"] == "SPOTWATCH_TEST_ID"
    assert he.env_value("plain") == ("plain", "")
