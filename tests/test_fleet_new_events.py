"""Capacity reservation interruption, capacity block expiration and AWS Health
scheduled-change events: parsing, hook runs and environment (pure, no I/O).

The sample envelopes follow the shapes in AWS's documentation: "Monitor
interruptible Capacity Reservations with EventBridge" and "Monitor Capacity
Blocks using EventBridge" (EC2 User Guide), and "Reference: AWS Health events
Amazon EventBridge schema" (AWS Health User Guide).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from spotwatch.fleet_events import (
    EVENT_PATTERN,
    event_environment,
    event_record,
    parse_message,
    parse_time,
)
from spotwatch.fleet_queue import Received
from spotwatch.fleet_schedule import Slot, next_to_run

ACCOUNT = "123456789012"
I1, I2, I3 = "i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2", "i-0ccccccccccccccc3"


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def reservation_interruption(instance: str = I1, **detail: Any) -> dict[str, Any]:
    return {
        "version": "0", "id": "11111111-1234-1234-1234-123456789012",
        "detail-type": "EC2 Capacity Reservation Instance Interruption Warning",
        "source": "aws.ec2", "account": ACCOUNT, "time": "2026-12-05T10:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{instance}"],
        "detail": {"instance-id": instance, "instance-action": "terminate",
                   "instance-termination-time": "2026-12-05T10:02:00Z", "azId": "use1-az1",
                   **detail},
    }


def block_expiration(detail_type: str = "Capacity Block Expiration Warning",
                     **detail: Any) -> dict[str, Any]:
    return {
        "version": "0", "id": "22222222-1234-1234-1234-123456789012",
        "detail-type": detail_type, "source": "aws.ec2", "account": ACCOUNT,
        "time": "2026-12-05T10:20:00Z", "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:{ACCOUNT}:capacity-reservation/cr-0123456789abcdef0"],
        "detail": {"capacity-reservation-id": "cr-0123456789abcdef0",
                   "end-date": "2026-12-05T11:00:00Z", **detail},
    }


def health_event(*instances: str, service: str = "EC2", category: str = "scheduledChange",
                 start: str = "Sat, 19 Dec 2026 10:00:00 GMT") -> dict[str, Any]:
    return {
        "version": "0", "id": "33333333-1234-1234-1234-123456789012",
        "detail-type": "AWS Health Event", "source": "aws.health", "account": ACCOUNT,
        "time": "2026-12-05T10:00:00Z", "region": "us-east-1", "resources": list(instances),
        "detail": {
            "eventArn": "arn:aws:health:us-east-1::event/EC2/"
                        "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/AWS_EC2_INSTANCE_RETIREMENT_1",
            "service": service,
            "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            "eventTypeCategory": category,
            "eventScopeCode": "ACCOUNT_SPECIFIC",
            "communicationId": "1234abc01232a4012345678-1",
            "startTime": start,
            "endTime": "Sat, 19 Dec 2026 11:00:00 GMT",
            "lastUpdatedTime": "Sat, 05 Dec 2026 10:00:00 GMT",
            "statusCode": "upcoming",
            "eventRegion": "us-east-1",
            "eventDescription": [{
                "language": "en_US",
                "latestDescription": "EC2 has detected degradation of the underlying hardware "
                                     "hosting your instances.",
            }],
            "affectedEntities": [{"entityValue": i, "status": "PENDING"} for i in instances],
            "affectedAccount": ACCOUNT,
        },
    }


def parse(data: dict[str, Any]) -> Any:
    return parse_message(json.dumps(data))


def test_the_rule_matches_each_new_detail_type_and_source() -> None:
    assert "aws.health" in EVENT_PATTERN["source"]
    for detail_type in ("EC2 Capacity Reservation Instance Interruption Warning",
                        "Capacity Block Expiration Warning",
                        "Capacity Block Reservation Expiration Warning", "AWS Health Event"):
        assert detail_type in EVENT_PATTERN["detail-type"]


def test_capacity_reservation_interruption_is_its_own_kind_with_the_termination_time() -> None:
    event = parse(reservation_interruption())
    assert (event.kind, event.action, event.instance_id) == (
        "capacity-reservation-interruption", "terminate", I1)
    assert event.instance_ids == (I1,) and event.problem == ""
    assert event.deadline == epoch("2026-12-05T10:02:00")
    assert [r.instance_id for r in event.runs()] == [I1]


def test_capacity_reservation_interruption_without_a_termination_time_gets_two_minutes() -> None:
    data = reservation_interruption()
    del data["detail"]["instance-termination-time"]
    data["time"] = "2026-12-05T10:00:07Z"
    event = parse(data)
    assert event.deadline == epoch("2026-12-05T10:02:07")
    assert event.problem == ""


@pytest.mark.parametrize("detail_type", ["Capacity Block Expiration Warning",
                                         "Capacity Block Reservation Expiration Warning"])
def test_capacity_block_warning_in_either_spelling_names_the_reservation(
        detail_type: str) -> None:
    event = parse(block_expiration(detail_type))
    assert event.kind == "capacity-block-expiration"
    assert event.capacity_reservation_id == "cr-0123456789abcdef0"
    assert event.action == "terminate"
    # No instances named: one run, instance unknown, and that is not a problem.
    assert (event.instance_id, event.instance_ids, event.problem) == ("unknown", (), "")
    assert len(event.runs()) == 1
    # Terminations start 30 minutes before the block's end-date.
    assert event.deadline == epoch("2026-12-05T10:30:00")
    env = event_environment({}, event, {}, "/tmp/e.json")
    assert env["SPOTWATCH_EVENT"] == "capacity-block-expiration"
    assert env["SPOTWATCH_CAPACITY_RESERVATION_ID"] == "cr-0123456789abcdef0"
    assert env["SPOTWATCH_INSTANCE_IDS"] == ""
    assert env["SPOTWATCH_DEADLINE"] == str(epoch("2026-12-05T10:30:00"))
    assert event_record(event, {})["capacity_reservation_id"] == "cr-0123456789abcdef0"


def test_capacity_block_warning_naming_instances_runs_once_with_all_of_them() -> None:
    data = block_expiration()
    data["resources"] += [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{i}" for i in (I1, I2)]
    event = parse(data)
    assert event.instance_ids == (I1, I2) and event.instance_id == I1
    assert len(event.runs()) == 1
    env = event_environment({}, event, {}, "/tmp/e.json")
    assert env["SPOTWATCH_INSTANCE_IDS"] == f"{I1} {I2}"
    assert env["SPOTWATCH_INSTANCE_ID"] == I1


def test_capacity_block_warning_without_the_reservation_or_end_says_so() -> None:
    data = block_expiration()
    data["resources"] = []
    del data["detail"]["capacity-reservation-id"], data["detail"]["end-date"]
    event = parse(data)
    assert event.kind == "capacity-block-expiration"  # still acted on
    assert "no capacity-reservation-id" in event.problem
    assert "end-date" in event.problem and event.deadline is None
    assert "SPOTWATCH_DEADLINE" not in event_environment(
        {"SPOTWATCH_DEADLINE": "stale"}, event, {}, "/tmp/e.json")


def test_capacity_block_reservation_id_falls_back_to_the_resource_arn() -> None:
    data = block_expiration()
    del data["detail"]["capacity-reservation-id"]
    assert parse(data).capacity_reservation_id == "cr-0123456789abcdef0"


def test_health_scheduled_change_runs_once_per_instance_in_order() -> None:
    event = parse(health_event(I1, I2, I3))
    assert (event.kind, event.action) == ("scheduled-change",
                                          "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED")
    assert event.instance_ids == (I1, I2, I3)
    assert event.deadline == epoch("2026-12-19T10:00:00")
    runs = event.runs()
    assert [r.instance_id for r in runs] == [I1, I2, I3]
    assert {r.event_id for r in runs} == {event.event_id}
    envs = [event_environment({}, r, {}, "/tmp/e.json") for r in runs]
    assert [e["SPOTWATCH_INSTANCE_ID"] for e in envs] == [I1, I2, I3]
    assert {e["SPOTWATCH_EVENT"] for e in envs} == {"scheduled-change"}
    assert {e["SPOTWATCH_DEADLINE"] for e in envs} == {str(epoch("2026-12-19T10:00:00"))}
    assert "SPOTWATCH_CAPACITY_RESERVATION_ID" not in envs[0]


def test_health_start_time_in_iso_form_is_read_too() -> None:
    event = parse(health_event(I1, start="2026-12-19T10:00:00Z"))
    assert event.deadline == epoch("2026-12-19T10:00:00")
    assert len(event.runs()) == 1 and event.runs()[0] is event


def test_health_instances_come_from_resources_when_no_entities_are_listed() -> None:
    data = health_event(I2, I3)
    del data["detail"]["affectedEntities"]
    assert parse(data).instance_ids == (I2, I3)


@pytest.mark.parametrize(("service", "category"), [("RDS", "scheduledChange"),
                                                    ("EC2", "issue"),
                                                    ("EC2", "accountNotification")])
def test_other_health_events_are_not_acted_on(service: str, category: str) -> None:
    event = parse(health_event(I1, service=service, category=category))
    assert not event.actionable


def test_new_detail_types_from_the_wrong_source_are_not_acted_on() -> None:
    data = health_event(I1)
    data["source"] = "aws.ec2"
    assert not parse(data).actionable
    data = block_expiration()
    data["source"] = "custom.app"
    assert not parse(data).actionable


def test_unreadable_times_give_no_deadline() -> None:
    assert parse_time("") is None
    assert parse_time("next tuesday") is None
    assert parse_time("2026-12-05T10:00:00+01:00") == epoch("2026-12-05T09:00:00")
    assert parse(health_event(I1, start="soon")).deadline is None
    assert "startTime" in parse(health_event(I1, start="soon")).problem


def test_a_health_event_keeps_its_place_among_each_named_instances_events() -> None:
    health = Received({}, parse(health_event(I1, I2)), "", 0.0)
    later = Received({}, parse(reservation_interruption(I2)), "", 0.0)
    other = Received({}, parse(reservation_interruption(I3)), "", 0.0)
    slots = [Slot(str(n), r.order_key(str(n)), n, 100.0, also=r.also_keys())
             for n, r in ((1, health), (2, later), (3, other))]
    running = [Slot(s.key, s.order_key, s.seq, s.hidden_until, s.key == "1", s.also)
               for s in slots]
    # While the Health event runs, I2's later event waits; I3's does not.
    chosen = next_to_run(running, 0.0)
    assert chosen is not None and chosen.key == "3"
    # And before it started, the I2 event could not overtake it either.
    first = next_to_run(slots, 0.0)
    assert first is not None and first.key == "1"
    # An earlier event for I2 running holds the Health event (and so I1's turn) back.
    busy_i2 = Slot("0", later.order_key("0"), 0, 100.0, running=True)
    chosen = next_to_run([busy_i2, *slots], 0.0)
    assert chosen is not None and chosen.key == "3"
