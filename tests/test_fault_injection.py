"""``spotwatch run`` against hostile metadata servers (tests/fault_servers.py), end to end.

Each case asserts the promise through a real daemon: the hooks run once and in
time, the daemon stays alive, SIGTERM is answered promptly even while a request
is stuck, and the fault is logged once. Bounds are generous: the machine may be
loaded; what they rule out is the old behaviour (a notice tens of seconds late,
SIGTERM ignored for as long as the server drips).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spotwatch.clouds.aws import poll_budget
from tests import fault_servers as fs
from tests.helpers import Daemon, Daemons, hook_env, recording_hook, starts, wait_until
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture

pytestmark = pytest.mark.slow

# A loaded CI machine: Python start-up, hooks as shell scripts.
SLACK = 6.0
FAULT_EVENTS = ("imds.fault", "monitor.fallback", "imds.mode_changed")


@pytest.fixture
def server() -> Iterator[fs.FaultServer]:
    with fs.FaultServer() as srv:
        yield srv


def hooks_ran_once(record: Path, names: list[str], wait: float) -> float:
    """Wait for every hook in ``names`` to start; the wall time the first started."""
    wait_until(lambda: starts(record) == names, wait, f"hooks {names} in {record}")
    first = next(
        float(line.split()[2]) for line in record.read_text().splitlines()
        if line.startswith(f"{names[0]} start")
    )  # fmt: skip
    return first


def answer_sigterm(daemon: Daemon, bound: float = 1.0 + 2.0) -> float:
    """Send SIGTERM; the seconds until the daemon exited (asserted under ``bound``)."""
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    daemon.wait(timeout=bound + 10)
    took = time.monotonic() - sent
    assert took < bound, f"SIGTERM took {took:.1f} s"
    return took


def fault_events(daemon: Daemon) -> list[dict[str, object]]:
    return [e for e in daemon.events() if e.get("event") in FAULT_EVENTS]


def in_flight(server: fs.FaultServer, path: str, count: int) -> None:
    wait_until(lambda: len(server.seen(path)) >= count, 30, f"{count} requests of {path}")


# -- AWS: drips ---------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [1, 5])
@pytest.mark.parametrize("content_length", [True, False], ids=["length", "no-length"])
def test_aws_dripping_answer_neither_delays_the_notice_nor_sigterm(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, server: fs.FaultServer,
    interval: float, content_length: bool,
) -> None:  # fmt: skip
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-a", record)
    aws = fs.Aws(server)
    every = 0.5 if interval == 1 else 0.9
    dripping = server.route(
        "GET", fs.INSTANCE_ACTION, fs.drip(b"x" * 80, every, content_length=content_length)
    )
    daemon = daemons.start(server.url, hooks_dir, interval=interval)
    daemon.wait_for_event("watcher.started")
    in_flight(server, fs.INSTANCE_ACTION, 2)
    # A real notice now: on main it came only when the 40-72 s drip ended.
    aws.notice(seconds=120)
    server.unroute(dripping)
    served = time.time()
    first = hooks_ran_once(record, ["10-a"], interval + poll_budget(interval) + SLACK + 10)
    assert first - served < interval + poll_budget(interval) + SLACK
    assert daemon.proc.poll() is None
    faults = fault_events(daemon)
    assert 1 <= len(faults) <= 2, faults  # once (instance-action, maybe its fallback)
    # And SIGTERM while a drip is stuck in the middle of a poll.
    server.route("GET", fs.INSTANCE_ACTION, fs.endless(every))
    server.route("GET", fs.TERMINATION_TIME, fs.endless(every))
    in_flight(server, fs.INSTANCE_ACTION, len(server.seen(fs.INSTANCE_ACTION)) + 1)
    time.sleep(0.3)
    answer_sigterm(daemon)
    assert starts(record) == ["10-a"]


@pytest.mark.parametrize(
    "behaviour",
    [fs.endless(0.5), fs.endless(0.5, content_length=True), fs.headers_then_silence()],
    ids=["endless-drip", "endless-drip-length", "headers-then-silence"],
)
def test_aws_endless_fault_from_the_start_is_logged_once_and_sigterm_is_prompt(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, server: fs.FaultServer,
    behaviour: fs.Behaviour,
) -> None:  # fmt: skip
    fs.Aws(server)
    server.route("GET", fs.INSTANCE_ACTION, behaviour)
    server.route("GET", fs.TERMINATION_TIME, behaviour)
    daemon = daemons.start(server.url, hooks_dir, interval=5)
    daemon.wait_for_event("watcher.started")
    # Polls go on at the interval: each ends within its 4 s budget.
    in_flight(server, fs.INSTANCE_ACTION, 4)
    seen = server.seen(fs.INSTANCE_ACTION)
    gaps = [b.at - a.at for a, b in zip(seen, seen[1:])]
    assert max(gaps) < 5 + SLACK, gaps
    events = daemon.wait_for_event("imds.fault")
    assert len(events) == 1
    assert events[0]["kind"] == "timeout"
    assert daemon.proc.poll() is None
    time.sleep(0.5)  # a poll is stuck in the drip now
    answer_sigterm(daemon)


# -- AWS: the token service ---------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour",
    [
        fs.reply(500),
        fs.redirect("http://127.0.0.1:9/token"),
        fs.huge(5 * 1024 * 1024),
        fs.huge(5 * 1024 * 1024, content_length=False),
        fs.silence(),
    ],
    ids=["500", "redirect", "5MB", "5MB-no-length", "hang"],
)
def test_aws_notice_never_depends_on_the_token_service(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, server: fs.FaultServer,
    behaviour: fs.Behaviour,
) -> None:  # fmt: skip
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-a", record)
    aws = fs.Aws(server, require_token=False)
    server.route("PUT", fs.TOKEN_PATH, behaviour)
    aws.notice(seconds=120)
    served = time.time()
    daemon = daemons.start(server.url, hooks_dir, interval=5)
    first = hooks_ran_once(record, ["10-a"], 30)
    assert first - served < 5 + SLACK + 5  # start-up, then the first poll
    changes = daemon.wait_for_event("imds.mode_changed")
    assert len(changes) == 1 and changes[0]["mode"] == "v1"
    assert daemon.events("imds.fault") == []
    time.sleep(1.0)
    assert starts(record) == ["10-a"]
    assert daemon.proc.poll() is None
    answer_sigterm(daemon)


# -- AWS: values no environment can hold ----------------------------------------------------


@pytest.mark.parametrize("where", ["notice-time", "instance-id"])
def test_aws_nul_in_metadata_never_stops_a_hook(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, server: fs.FaultServer, where: str
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-a", record)
    recording_hook(hooks_dir, "20-b", record)
    aws = fs.Aws(server, instance_id="i-0bad\x00id" if where == "instance-id" else "i-0fault")
    stamp = fs.iso(time.time() + 120)
    aws.notice(raw_time=stamp[:4] + "\x00" + stamp[4:] if where == "notice-time" else stamp)
    daemon = daemons.start(server.url, hooks_dir, interval=1)
    hooks_ran_once(record, ["10-a", "20-b"], 30)
    wait_until(lambda: "20-b end" in record.read_text(), 15, "20-b to end")
    env = hook_env(record, "10-a")
    variable = "SPOTWATCH_NOTICE_TIME" if where == "notice-time" else "SPOTWATCH_INSTANCE_ID"
    assert "\x00" not in env[variable]
    cleaned = daemon.events("hook_env.value_cleaned")
    assert [e["variable"] for e in cleaned] == [variable]  # once, with the field's name
    assert not [e for e in daemon.events() if e.get("event") == "hook.failed"]
    assert daemon.proc.poll() is None
    answer_sigterm(daemon)


# -- Google and Azure ----------------------------------------------------------------------


def test_gcp_dripping_preempted_answer_does_not_delay_the_preemption(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, server: fs.FaultServer
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-a", record)
    google = fs.Google(server)
    path = fs.GCE + "instance/preempted"
    dripping = server.route(
        "GET", path, fs.drip(b"FALSE" + b" " * 80, 0.5, headers=fs.GCE_FLAVOR, content_length=False)
    )
    daemon = daemons.start(server.url, hooks_dir, "--cloud", "gcp", interval=5)
    daemon.wait_for_event("watcher.started")
    in_flight(server, path, 2)
    google.set("instance/preempted", "TRUE")
    server.unroute(dripping)
    changed = time.time()
    first = hooks_ran_once(record, ["10-a"], 40)
    # Google gives about 30 s; on main the drip held it for 41 s.
    assert first - changed < 2.0 + 3.0 + SLACK
    assert len(daemon.events("imds.fault")) == 1
    answer_sigterm(daemon)
    assert starts(record) == ["10-a"]


def test_azure_dripping_events_do_not_delay_the_eviction(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, server: fs.FaultServer
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-a", record)
    azure = fs.Azure(server)
    dripping = server.route(
        "GET", fs.AZ_EVENTS, fs.drip(azure.body() + b" " * 200, 0.5),
        match=lambda req: len(server.seen(fs.AZ_EVENTS)) > 1,
    )  # fmt: skip
    daemon = daemons.start(server.url, hooks_dir, "--cloud", "azure", interval=1)
    daemon.wait_for_event("watcher.started")
    in_flight(server, fs.AZ_EVENTS, 3)
    azure.preempt(seconds=60)
    server.unroute(dripping)
    changed = time.time()
    first = hooks_ran_once(record, ["10-a"], 40)
    assert first - changed < 6.0 + 1.0 + SLACK
    assert len(daemon.events("imds.fault")) == 1
    answer_sigterm(daemon)
    assert starts(record) == ["10-a"]
