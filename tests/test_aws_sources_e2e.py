"""Every way AWS takes an instance away, end to end: ``spotwatch run`` as a subprocess
against the IMDS simulator (and the fake Auto Scaling API), real hooks.

One end, one run (the fold rule), scheduled maintenance planned at NotBefore - lead,
cancels and reschedules honoured, the lifecycle action heartbeated and completed.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from spotwatch.imdssim import (
    INSTANCE_ACTION_PATH,
    LIFECYCLE_PATH,
    MAINTENANCE_SCHEDULED_PATH,
    ImdsSimulator,
    format_time,
)
from tests.fake_autoscaling import FakeAutoScaling
from tests.helpers import (
    Daemons,
    free_port,
    hook_env,
    read_record,
    recording_hook,
    starts,
    wait_until,
)
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture
from tests.helpers import sim_fixture as sim_fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

INSTANCE = "i-0123456789abcdef0"  # the simulator's identity
EVENT_ID = "instance-event-0d59937288b749b32"



@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "record.txt"


def stamp(event: dict[str, object]) -> float:
    return (
        datetime.strptime(str(event["timestamp"]), "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=timezone.utc)
        .timestamp()
    )


def start_time(record: Path, hook: str) -> float:
    return next(
        float(rest) for h, what, rest in read_record(record) if h == hook and what == "start"
    )


# -- one end, one run ---------------------------------------------------------------


def test_garbled_then_proper_spot_notice_runs_the_hooks_once(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-a", record)
    daemon = daemons.start(sim.url, hooks_dir)
    daemon.wait_for_event("watcher.started")
    sim.inject("invalid-json", count=1, path=INSTANCE_ACTION_PATH)
    sim.schedule_notice("terminate")
    daemon.wait_for_event("notice.folded", timeout=20)
    polls = sim.count(INSTANCE_ACTION_PATH)
    sim.wait_for_requests(INSTANCE_ACTION_PATH, polls + 2, timeout=10)
    assert starts(record) == ["10-a"]
    detected = daemon.events("notice.detected")
    assert len(detected) == 1 and "not valid JSON" in detected[0]["problem"]
    (folded,) = daemon.events("notice.folded")
    assert folded["into"] == detected[0]["notice_id"]


@pytest.mark.parametrize("first", ["spot", "asg"])
def test_spot_notice_and_terminated_within_one_interval_run_once_with_the_earlier_deadline(
    first: str,
    sim: ImdsSimulator,
    hooks_dir: Path,
    record: Path,
    tmp_path: Path,
    daemons: Daemons,
) -> None:
    recording_hook(hooks_dir, "10-a", record, extra="sleep 1.5")
    recording_hook(hooks_dir, "20-b", record)
    sim.schedule_lifecycle_state("InService")
    daemon = daemons.start(sim.url, hooks_dir, "--watch", "spot,asg", "--asg-deadline", "30")
    daemon.wait_for_event("watcher.started")
    now = time.time()
    spot_at, asg_at = (now + 0.5, now + 1.0) if first == "spot" else (now + 1.0, now + 0.5)
    spot_deadline = int(spot_at) + 120
    sim.schedule_notice("terminate", appear_at=spot_at, notice_time=format_time(spot_deadline))
    sim.schedule_lifecycle_state("Terminated", at=asg_at)
    daemon.wait_for_event("notice.folded", timeout=20)
    daemon.wait_for_event("notice.handled", timeout=20)
    polls = sim.count(LIFECYCLE_PATH)
    sim.wait_for_requests(LIFECYCLE_PATH, polls + 2, timeout=10)

    assert starts(record) == ["10-a", "20-b"]
    assert len(daemon.events("notice.handled")) == 1
    last = hook_env(record, "20-b")
    # The Auto Scaling deadline (seen + 30 s) is the earlier one: the hook after the fold
    # sees it, whichever came first; the event and the notice id stay the first notice's.
    assert int(last["SPOTWATCH_DEADLINE"]) < spot_deadline - 60
    assert abs(int(last["SPOTWATCH_DEADLINE"]) - (asg_at + 30)) < 5
    # The run is the first notice's (under load both may land in one poll: the spot
    # notice then goes first); the other one is folded into it.
    (run,) = daemon.events("notice.detected")
    (folded,) = daemon.events("notice.folded")
    assert last["SPOTWATCH_EVENT"] == run["kind"] and folded["into"] == run["notice_id"]
    assert {run["kind"], folded["kind"]} == {"spot-interruption", "asg-termination"}
    assert hook_env(record, "10-a")["SPOTWATCH_NOTICE_ID"] == last["SPOTWATCH_NOTICE_ID"]


# -- scheduled maintenance ------------------------------------------------------------

MAINTENANCE = ("--watch", "maintenance", "--maintenance-lead", "5", "--deadline-margin", "1")


def test_maintenance_hooks_start_lead_seconds_before_not_before(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-a", record)
    not_before = int(time.time()) + 10
    sim.schedule_maintenance(EVENT_ID, not_before, code="instance-stop")
    daemon = daemons.start(sim.url, hooks_dir, *MAINTENANCE)
    daemon.wait_for_event("notice.handled", timeout=25)
    began = start_time(record, "10-a")
    # 5 s before NotBefore, within one poll (1 s) plus slack for a loaded machine.
    assert not_before - 5 - 0.1 <= began <= not_before - 5 + 1 + 1.5
    env = hook_env(record, "10-a")
    assert env["SPOTWATCH_EVENT"] == "scheduled-maintenance"
    assert env["SPOTWATCH_ACTION"] == "instance-stop"
    assert env["SPOTWATCH_DEADLINE"] == str(not_before)
    assert env["SPOTWATCH_MAINTENANCE_EVENT_ID"] == EVENT_ID
    # Still listed as active: it does not run twice.
    reads = sim.count(MAINTENANCE_SCHEDULED_PATH)
    wait_until(lambda: time.time() > not_before + 1, 15, "NotBefore to pass")
    assert starts(record) == ["10-a"]
    assert sim.count(MAINTENANCE_SCHEDULED_PATH) <= reads + 2  # about once a minute, not per tick


def test_maintenance_canceled_before_its_time_runs_no_hooks(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-a", record)
    # Hooks would be due 6 s in: time for the daemon's first read, then the cancel.
    not_before = int(time.time()) + 11
    sim.schedule_maintenance(EVENT_ID, not_before)
    daemon = daemons.start(sim.url, hooks_dir, *MAINTENANCE)
    sim.wait_for_requests(MAINTENANCE_SCHEDULED_PATH, 1, timeout=15)
    assert daemon.wait_for_event("maintenance.planned")
    sim.end_maintenance(EVENT_ID, "canceled")
    wait_until(lambda: time.time() > not_before + 1, 20, "NotBefore to pass")
    assert starts(record) == []
    assert daemon.events("notice.detected") == []
    # The list was read again just before the hooks would have started.
    assert sim.count(MAINTENANCE_SCHEDULED_PATH) >= 2


def test_maintenance_rescheduled_runs_at_the_new_time_only(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-a", record)
    old = int(time.time()) + 11
    sim.schedule_maintenance(EVENT_ID, old)
    daemon = daemons.start(sim.url, hooks_dir, *MAINTENANCE)
    sim.wait_for_requests(MAINTENANCE_SCHEDULED_PATH, 1, timeout=15)
    new = old + 4
    sim.schedule_maintenance(EVENT_ID, new)  # same EventId, later NotBefore
    daemon.wait_for_event("notice.handled", timeout=25)
    began = start_time(record, "10-a")
    assert began >= new - 5 - 0.1
    assert hook_env(record, "10-a")["SPOTWATCH_DEADLINE"] == str(new)
    wait_until(lambda: time.time() > new + 0.5, 15, "the new NotBefore to pass")
    assert starts(record) == ["10-a"]


# -- Auto Scaling lifecycle action ---------------------------------------------------

BOTO3_WATCH = """
import json, sys, time

class _Boto3Watch:
    # Logs (as a JSON line on stderr, like the daemon) the first import of boto3/botocore.
    def find_spec(self, name, path=None, target=None):
        if name in ("boto3", "botocore"):
            sys.stderr.write(json.dumps({"event": "test.boto3_imported", "module": name,
                                         "at": time.time()}) + "\\n")
            sys.stderr.flush()
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, _Boto3Watch())
"""


def aws_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BOTO3_WATCH)
    return {
        "PYTHONPATH": str(site),
        "AWS_ENDPOINT_URL_AUTO_SCALING": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_lifecycle_heartbeats_while_hooks_run_then_one_continue_and_no_boto3_before(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-a", record)
    # Long enough for heartbeats even when boto3's first import is slow on a loaded machine.
    recording_hook(hooks_dir, "20-long", record, extra="sleep 5")
    sim.schedule_lifecycle_state("InService")
    with FakeAutoScaling() as fake:
        fake.add_instance(INSTANCE, group="web", hooks={"drain": 2})  # heartbeat every 1 s
        daemon = daemons.start(sim.url, hooks_dir,
            "--watch", "spot,rebalance,maintenance,asg", "--asg-lifecycle-hook", "drain",
            env=aws_env(tmp_path, fake.url),
        )  # fmt: skip
        daemon.wait_for_event("watcher.started")
        polls = sim.count(LIFECYCLE_PATH)
        sim.wait_for_requests(LIFECYCLE_PATH, polls + 3, timeout=15)
        assert daemon.events("test.boto3_imported") == []  # every AWS source on, idle

        sim.schedule_lifecycle_state("Terminated")
        daemon.wait_for_event("asg.lifecycle_completed", timeout=30)
        (detected,) = daemon.events("notice.detected")
        imported = daemon.events("test.boto3_imported")
        assert imported and imported[0]["at"] >= time.time() - 60
        assert detected["kind"] == "asg-termination"

        long_start, long_end = (
            float(rest)
            for h, what, rest in read_record(record)
            if h == "20-long" and what in ("start", "end")
        )
        beats = fake.calls_of("RecordLifecycleActionHeartbeat", ok_only=True)
        assert any(long_start <= b.wall <= long_end for b in beats)
        (done,) = fake.calls_of("CompleteLifecycleAction")
        assert done.params == {
            "AutoScalingGroupName": "web",
            "LifecycleHookName": "drain",
            "InstanceId": INSTANCE,
            "LifecycleActionResult": "CONTINUE",
        }
        assert done.wall >= long_end
        assert fake.completed(INSTANCE) == "CONTINUE"
        (lookup,) = fake.calls_of("DescribeAutoScalingInstances")
        assert lookup.params == {"InstanceIds.member.1": INSTANCE}
        assert not any(b.wall > done.wall for b in fake.calls_of("RecordLifecycleActionHeartbeat"))
        (completed,) = daemon.events("asg.lifecycle_completed")
        assert completed["hooks"] == "all ok"


def test_access_denied_is_retried_logged_once_with_the_permission_and_never_stops_hooks(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-a", record, extra="exit 3")
    recording_hook(hooks_dir, "20-b", record)
    sim.schedule_lifecycle_state("Terminated")
    with FakeAutoScaling() as fake:
        fake.add_instance(INSTANCE, group="web", hooks={"drain": 60})
        fake.fail("DescribeLifecycleHooks", "no-such-hook")
        fake.fail("CompleteLifecycleAction", "access-denied", times=2)
        daemon = daemons.start(sim.url, hooks_dir,
            "--watch", "asg", "--asg-lifecycle-hook", "drain", "--asg-name", "web",
            env=aws_env(tmp_path, fake.url),
        )  # fmt: skip
        daemon.wait_for_event("asg.lifecycle_completed", timeout=30)
        assert starts(record) == ["10-a", "20-b"]
        assert hook_env(record, "10-a")["SPOTWATCH_ASG_NAME"] == "web"
        answered = [c.answered for c in fake.calls_of("CompleteLifecycleAction")]
        assert answered == ["access-denied", "access-denied", "ok"]
        errors = daemon.events("asg.api_error")
        denied = [e for e in errors if e["operation"] == "CompleteLifecycleAction"]
        assert len(denied) == 1
        assert denied[0]["missing_permission"] == "autoscaling:CompleteLifecycleAction"
        assert [e["operation"] for e in errors].count("DescribeLifecycleHooks") == 1
        (completed,) = daemon.events("asg.lifecycle_completed")
        assert "10-a" in completed["hooks"]
        assert fake.calls_of("DescribeAutoScalingInstances") == []  # --asg-name given


def test_hooks_run_when_the_auto_scaling_api_is_down(
    sim: ImdsSimulator, hooks_dir: Path, record: Path, tmp_path: Path, daemons: Daemons
) -> None:
    recording_hook(hooks_dir, "10-a", record)
    sim.schedule_lifecycle_state("Terminated")
    down = f"http://127.0.0.1:{free_port()}"
    daemon = daemons.start(sim.url, hooks_dir,
        "--watch", "asg", "--asg-lifecycle-hook", "drain", "--asg-deadline", "8",
        "--deadline-margin", "1",
        env=aws_env(tmp_path, down),
    )  # fmt: skip
    handled = daemon.wait_for_event("notice.handled", timeout=20)[0]
    assert starts(record) == ["10-a"] and handled["failed"] == []
    # The group lookup never holds up the first hook by more than 2 s (plus slack).
    seen = stamp(daemon.events("notice.detected")[0])
    assert stamp(daemon.events("hook.started")[0]) - seen < 2.0 + 1.0
    daemon.wait_for_event("asg.api_error", timeout=15)
    time.sleep(3)  # more retries within the 8 s deadline: still one line per operation
    operations = [e["operation"] for e in daemon.events("asg.api_error")]
    assert operations.count("DescribeAutoScalingInstances") == 1
