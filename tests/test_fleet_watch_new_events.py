"""`spotwatch fleet watch` end to end for the capacity reservation interruption,
capacity block expiration and AWS Health scheduled-change events: `fleet setup`'s
rule on moto's EventBridge routes them into moto's SQS on 127.0.0.1, real hooks run.

The detail payloads follow AWS's documented samples (see test_fleet_new_events.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.fleet_helpers import Fleet, Watch, make_hooks, no_crash, read_lines, watch_env
from tests.fleet_helpers import make_fleet_fixture as make_fleet_fixture
from tests.fleet_helpers import watches_fixture as watches_fixture
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"
RESERVATION = "cr-0123456789abcdef0"
I1, I2, I3, I4 = ("i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2", "i-0ccccccccccccccc3",
                  "i-0ddddddddddddddd4")

# Every hook run leaves its environment in $OUT_DIR/<event id>-<instance>.env and a
# line in $OUT_DIR/runs, in the order the runs happened.
RECORD = (
    'env | grep "^SPOTWATCH_" | sort > "$OUT_DIR/$SPOTWATCH_EVENT_ID-$SPOTWATCH_INSTANCE_ID.env"\n'
    'echo "$SPOTWATCH_EVENT $SPOTWATCH_INSTANCE_ID" >> "$OUT_DIR/runs"\n'
)


def put(fleet: Fleet, source: str, detail_type: str, detail: dict[str, Any],
        resources: list[str]) -> str:
    response = fleet.events.put_events(Entries=[{
        "Source": source, "DetailType": detail_type, "Detail": json.dumps(detail),
        "Resources": resources}])
    assert response["FailedEntryCount"] == 0
    return str(response["Entries"][0]["EventId"])


def health_detail(*instances: str) -> dict[str, Any]:
    return {
        "eventArn": "arn:aws:health:us-east-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/"
                    "AWS_EC2_INSTANCE_RETIREMENT_1",
        "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
        "eventTypeCategory": "scheduledChange", "eventScopeCode": "ACCOUNT_SPECIFIC",
        "startTime": "Sat, 19 Dec 2026 10:00:00 GMT", "endTime": "Sat, 19 Dec 2026 11:00:00 GMT",
        "statusCode": "upcoming", "eventRegion": "us-east-1",
        "eventDescription": [{"language": "en_US", "latestDescription": "retirement"}],
        "affectedEntities": [{"entityValue": i, "status": "PENDING"} for i in instances],
        "affectedAccount": ACCOUNT,
    }


def env_of(out: Path, event_id: str, instance: str) -> dict[str, str]:
    lines = read_lines(out / f"{event_id}-{instance}.env")
    assert lines, f"no hook run for {event_id} {instance}"
    return dict(line.split("=", 1) for line in lines)


def test_each_new_event_type_reaches_the_hooks(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()
    arn = f"arn:aws:ec2:us-east-1:{ACCOUNT}:"
    interruption = put(fleet, "aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning",
                       {"instance-id": I4, "instance-action": "terminate",
                        "instance-termination-time": "2026-12-05T10:02:00Z",
                        "azId": "use1-az1"}, [f"{arn}instance/{I4}"])
    block = put(fleet, "aws.ec2", "Capacity Block Expiration Warning",
                {"capacity-reservation-id": RESERVATION, "end-date": "2026-12-05T11:00:00Z"},
                [f"{arn}capacity-reservation/{RESERVATION}"])
    block_other = put(fleet, "aws.ec2", "Capacity Block Reservation Expiration Warning",
                      {"capacity-reservation-id": "cr-0fedcba9876543210",
                       "end-date": "2026-12-05T12:00:00Z"},
                      [f"{arn}capacity-reservation/cr-0fedcba9876543210"])
    health = put(fleet, "aws.health", "AWS Health Event", health_detail(I1, I2, I3),
                 [I1, I2, I3])
    ignored = put(fleet, "aws.health", "AWS Health Event",
                  {**health_detail(I1), "eventTypeCategory": "issue"}, [I1])
    out = tmp_path / "out"
    out.mkdir()
    hooks = make_hooks(tmp_path, ("10-record", RECORD))
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks), "--json",
                     "--max-messages", "5", "--wait-seconds", "1"], env=watch_env(out))
    assert watch.wait(timeout=90) == 0, watch.stderr()
    no_crash(watch)

    env = env_of(out, interruption, I4)
    assert (env["SPOTWATCH_EVENT"], env["SPOTWATCH_ACTION"], env["SPOTWATCH_INSTANCE_ID"]) == (
        "capacity-reservation-interruption", "terminate", I4)
    assert env["SPOTWATCH_DEADLINE"] == "1796464920"  # 2026-12-05T10:02:00Z
    assert env["SPOTWATCH_DETAIL_TYPE"] == "EC2 Capacity Reservation Instance Interruption Warning"

    for event_id, reservation, deadline in ((block, RESERVATION, "1796466600"),
                                            (block_other, "cr-0fedcba9876543210", "1796470200")):
        env = env_of(out, event_id, "unknown")  # a block names its reservation, not instances
        assert env["SPOTWATCH_EVENT"] == "capacity-block-expiration"
        assert env["SPOTWATCH_CAPACITY_RESERVATION_ID"] == reservation
        assert env["SPOTWATCH_INSTANCE_IDS"] == ""
        assert env["SPOTWATCH_DEADLINE"] == deadline  # end-date less 30 minutes

    runs = read_lines(out / "runs")
    health_runs = [line for line in runs if line.startswith("scheduled-change ")]
    assert health_runs == [f"scheduled-change {i}" for i in (I1, I2, I3)]  # one each, in order
    for instance in (I1, I2, I3):
        env = env_of(out, health, instance)
        assert env["SPOTWATCH_INSTANCE_ID"] == instance
        assert env["SPOTWATCH_ACTION"] == "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"
        assert env["SPOTWATCH_DEADLINE"] == "1797674400"  # startTime 2026-12-19T10:00:00Z
        assert env["SPOTWATCH_REGION"] == "us-east-1"
    assert len(runs) == 6  # 1 + 2 + 3: the Health issue event ran nothing

    printed = [json.loads(line) for line in watch.lines()]
    assert sorted(r["instance_id"] for r in printed if r["event_id"] == health) == [I1, I2, I3]
    assert [r["capacity_reservation_id"] for r in printed if r["event_id"] == block] == [
        RESERVATION]
    assert [r["event_id"] for r in watch.logs("fleet.ignored")] == [ignored]
    assert len(watch.logs("fleet.handled")) == 6
    assert fleet.counts() == (0, 0)  # every message deleted


def test_a_health_event_that_fails_for_one_instance_is_retried_without_rerunning_the_others(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    (out / f"fail-{I2}").touch()
    hooks = make_hooks(tmp_path, ("10-record", (
        'if [ -e "$OUT_DIR/fail-$SPOTWATCH_INSTANCE_ID" ]; then echo "not yet" >&2; exit 3; fi\n'
        + RECORD)))
    health = put(fleet, "aws.health", "AWS Health Event", health_detail(I1, I2, I3),
                 [I1, I2, I3])
    # The watcher's first extension of the message must land within the visibility
    # timeout of its receive. With 2 s, a loaded machine sometimes missed it: the
    # message was lost (another watcher may have it) and came back, and I1 ran
    # again, as it must once the message is not ours. 6 s (what the watcher extends
    # to anyway) leaves room; the failed message still comes back 6 s after I2 fails.
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--visibility-timeout", "6", "--wait-seconds", "1"], env=watch_env(out))
    failed = watch.wait_for("fleet.hooks_failed")[0]
    assert failed["event_id"] == health
    assert not watch.logs("fleet.lost_message"), "not extended within 6 s: machine overloaded"
    assert read_lines(out / "runs") == [f"scheduled-change {I1}"]  # I3 waits behind I2
    (out / f"fail-{I2}").unlink()
    wait_until(lambda: fleet.counts() == (0, 0), 40, "the Health event to be handled and deleted")
    assert watch.terminate() == 0
    no_crash(watch)
    # I1 ran once: its run succeeded before I2 failed, and the redelivery skipped it.
    assert read_lines(out / "runs") == [f"scheduled-change {i}" for i in (I1, I2, I3)]
    assert {r["instance_id"] for r in watch.logs("fleet.duplicate")} == {I1}
