"""Telling a system shutdown from an operator's stop, the stop timeout, the last check."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from spotwatch import shutdown
from spotwatch.notice import Notice
from spotwatch.shutdown import StopKind, classify
from spotwatch.stopper import Stopper


@pytest.mark.parametrize(
    ("jobs", "kind"),
    [
        ("  1 poweroff.target start waiting\n 23 spotwatch.service stop running\n", "poweroff"),
        ("7 reboot.target start waiting\n", "reboot"),
        ("7 halt.target start waiting\n", "halt"),
        ("9 kexec.target start waiting\n", "kexec"),
    ],
)
def test_a_queued_shutdown_job_names_the_shutdown(jobs: str, kind: str) -> None:
    found = classify(True, jobs, "stopping\n")
    assert found.shutdown == kind and "queued" in found.how


def test_operator_stop_restart_and_upgrade_are_not_shutdowns() -> None:
    for jobs in ("23 spotwatch.service stop running\n", "24 spotwatch.service restart running\n",
                 ""):  # fmt: skip
        assert classify(True, jobs, "running\n") == StopKind(
            None, "no shutdown job queued and the system is running"
        )
    assert not classify(True, "", "degraded").is_shutdown


def test_stopping_without_a_named_target_is_an_unknown_shutdown() -> None:
    assert classify(True, "", "stopping").shutdown == "unknown"


def test_under_systemd_where_it_cannot_tell_it_counts_as_a_shutdown() -> None:
    assert classify(True, None, None).shutdown == "unknown"
    assert classify(True, "", None).shutdown == "unknown"


def test_outside_systemd_a_signal_is_an_operators_stop() -> None:
    assert not classify(False, "1 poweroff.target start waiting", "stopping").is_shutdown
    assert shutdown.under_systemd({"INVOCATION_ID": "abc"})
    assert not shutdown.under_systemd({})
    assert not shutdown.probe_systemd({}).is_shutdown


def test_stop_timeout_as_systemctl_prints_it() -> None:
    assert shutdown.parse_usec("2min 30s") == 150.0
    assert shutdown.parse_usec("1min 30.500s") == 90.5
    assert shutdown.parse_usec("150000000") == 150.0
    assert shutdown.parse_usec("infinity") == float("inf")
    assert shutdown.parse_usec("") is None and shutdown.parse_usec("soon") is None


def test_own_unit_from_the_cgroup(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/system.slice/spotwatch.service\n")
    assert shutdown.own_unit(cgroup) == "spotwatch.service"
    cgroup.write_text("0::/user.slice/user-0.slice/session-3.scope\n")
    assert shutdown.own_unit(cgroup) is None
    assert shutdown.own_unit(tmp_path / "missing") is None


def test_deadline_is_the_stop_timeout_less_a_reserve_and_30_s_on_google() -> None:
    assert shutdown.shutdown_deadline(1000.0, 150.0, cloud="aws") == 1148.0
    assert shutdown.shutdown_deadline(1000.0, None, cloud="aws") == 1088.0  # systemd's default
    assert shutdown.shutdown_deadline(1000.0, 150.0, cloud="gcp") == 1030.0
    assert shutdown.shutdown_deadline(1000.0, float("inf"), cloud="azure") == 1000.0 + 86398.0


class _Slow:
    name = "slow"

    def check(self) -> Notice | None:
        time.sleep(3)
        return None


class _Quick:
    def __init__(self, answer: Any) -> None:
        self.name = "quick"
        self.answer = answer

    def check(self) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_last_check_takes_at_most_its_budget() -> None:
    notice = Notice("spot-interruption", "terminate", "", None, 1.0, "n1", "test")
    started = time.monotonic()
    found = shutdown.last_check([_Slow(), _Quick(notice), _Quick(OSError("down"))], 0.3)
    assert found == [notice]
    assert time.monotonic() - started < 2.0


def test_a_second_signal_is_counted() -> None:
    stop = Stopper()
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2.0)
        os.kill(os.getpid(), signal.SIGTERM)
        stop.wait(0.1)
        assert stop.signals == 2
        link = shutdown.SystemShutdown(signals=lambda: stop.signals, cloud="aws",
                                       runs_hooks=True, environ={})  # fmt: skip
        assert link.forced() and not link.classify().is_shutdown
    finally:
        stop.close()
