"""`spotwatch fleet watch` end to end: real subprocesses, real hooks, real signals,
EventBridge and SQS from moto's server on 127.0.0.1 over HTTP.

Each test makes its own queue, DLQ and rule with `fleet setup` (unique names;
the moto server is shared by the session) and tears them down afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.fleet_helpers import (
    FULFILLMENT,
    INTERRUPTION,
    REBALANCE,
    STATE_CHANGE,
    Fleet,
    Watch,
    make_hooks,
    no_crash,
    read_lines,
    watch_env,
)
from tests.fleet_helpers import make_fleet_fixture as make_fleet_fixture
from tests.fleet_helpers import watches_fixture as watches_fixture
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

# -- every detail type, through put_events ------------------------------------------------


def test_each_detail_type_is_printed_acted_on_and_deleted(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    import boto3

    fleet = make_fleet()
    ec2 = boto3.client("ec2")
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "Name", "Value": "web-1"},
                                     {"Key": "team", "Value": "search"}]}],
    )["Instances"][0]["InstanceId"]
    unknown = "i-0000000000000dead"  # EC2 (moto) has never heard of it: no tags, no failure
    sent = fleet.put(
        (INTERRUPTION, {"instance-id": instance, "instance-action": "terminate"}),
        (REBALANCE, {"instance-id": unknown}),
        (FULFILLMENT, {"spot-instance-request-id": "sir-1a2b3c4d", "instance-id": instance}),
        (STATE_CHANGE, {"instance-id": instance, "state": "stopping"}),
    )
    out = tmp_path / "out"
    out.mkdir()
    hooks = make_hooks(tmp_path, ("10-record", (
        'env | grep "^SPOTWATCH_" | sort > "$OUT_DIR/$SPOTWATCH_EVENT_ID.env"\n'
        'cp "$SPOTWATCH_EVENT_JSON" "$OUT_DIR/$SPOTWATCH_EVENT_ID.json"\n'
    )))
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks), "--json",
                     "--max-messages", "4", "--wait-seconds", "1"], env=watch_env(out))
    assert watch.wait(timeout=90) == 0, watch.stderr()
    no_crash(watch)

    printed = {r["event_id"]: r for r in map(json.loads, watch.lines())}
    assert sorted(printed) == sorted(sent)
    expected = {
        sent[0]: ("spot-interruption", "terminate", instance, "web-1"),
        sent[1]: ("rebalance-recommendation", "rebalance", unknown, ""),
        sent[2]: ("spot-fulfillment", "fulfilled", instance, "web-1"),
        sent[3]: ("state-change", "stopping", instance, "web-1"),
    }
    for event_id, (kind, action, instance_id, name) in expected.items():
        record = printed[event_id]
        assert (record["event"], record["action"], record["instance_id"], record["name"]) == (
            kind, action, instance_id, name)
        env = dict(line.split("=", 1) for line in read_lines(out / f"{event_id}.env"))
        body = json.loads((out / f"{event_id}.json").read_text())
        assert body["id"] == event_id and body["source"] == "aws.ec2"
        assert env["SPOTWATCH_EVENT"] == kind
        assert env["SPOTWATCH_ACTION"] == action
        assert env["SPOTWATCH_INSTANCE_ID"] == instance_id
        assert env["SPOTWATCH_REGION"] == "us-east-1"
        assert env["SPOTWATCH_EVENT_ID"] == event_id
        assert env["SPOTWATCH_EVENT_TIME"] == body["time"]
        assert env["SPOTWATCH_EVENT_JSON"].endswith(".json")
        assert env["SPOTWATCH_DETAIL_TYPE"] == body["detail-type"]
        assert env["SPOTWATCH_INSTANCE_NAME"] == name
        assert Path(env["SPOTWATCH_BIN"]).name == "spotwatch"  # hooks may call spotwatch
        tags = json.loads(env["SPOTWATCH_INSTANCE_TAGS_JSON"])
        assert tags == ({"Name": "web-1", "team": "search"} if name else {})
    # The event file is the watcher's scratch: gone once the hooks are done.
    assert not Path(env["SPOTWATCH_EVENT_JSON"]).exists()
    assert len(watch.logs("fleet.handled")) == 4
    assert fleet.counts() == (0, 0)  # every message deleted


def test_without_hooks_each_event_is_one_line_and_deleted(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch]
) -> None:
    fleet = make_fleet()
    sent = fleet.put(
        (INTERRUPTION, {"instance-id": "i-0aaaaaaaaaaaaaaa1", "instance-action": "stop"}),
        (INTERRUPTION, {"instance-id": "i-0aaaaaaaaaaaaaaa2", "instance-action": "hibernate"}),
    )
    watch = watches(["--queue-url", fleet.queue_url, "--max-messages", "2", "--wait-seconds", "1"])
    assert watch.wait() == 0, watch.stderr()
    lines = sorted(watch.lines(), key=lambda line: line.split()[-1] != sent[0])
    assert [line.split()[1:4] for line in lines] == [
        ["spot-interruption", "stop", "i-0aaaaaaaaaaaaaaa1"],
        ["spot-interruption", "hibernate", "i-0aaaaaaaaaaaaaaa2"],
    ]
    assert [line.split()[-1] for line in lines] == sent
    assert fleet.counts() == (0, 0)


# -- failures, redelivery, duplicates --------------------------------------------------


def test_failing_hook_leaves_the_message_and_a_duplicate_is_not_acted_on_twice(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    (out / "fail").touch()
    hooks = make_hooks(tmp_path, ("10-act", (
        'cp "$SPOTWATCH_EVENT_JSON" "$OUT_DIR/event.json"\n'
        'if [ -e "$OUT_DIR/fail" ]; then echo "not today" >&2; exit 3; fi\n'
        'echo "$SPOTWATCH_EVENT_ID" >> "$OUT_DIR/acted"\n'
    )))
    (event_id,) = fleet.put((INTERRUPTION, {"instance-id": "i-0f00", "instance-action": "stop"}))
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--visibility-timeout", "2", "--wait-seconds", "1"], env=watch_env(out))

    failed = watch.wait_for("fleet.hooks_failed")[0]
    assert failed["event_id"] == event_id and failed["retry_in"] == 2
    assert "10-act: exit 3" in failed["failed"]
    assert sum(fleet.counts()) == 1  # not deleted: still in the queue
    assert read_lines(out / "acted") == []

    (out / "fail").unlink()  # the operator fixes the hook
    handled = watch.wait_for("fleet.handled", timeout=40)[0]
    assert handled["event_id"] == event_id
    assert read_lines(out / "acted") == [event_id]
    # It came back only after its visibility timeout (2 s from the last failure).
    last_failure = watch.logs("fleet.hooks_failed")[-1]
    retried = [r for r in watch.logs("hook.started") if r["timestamp"] > last_failure["timestamp"]]
    gap = _seconds(retried[0]["timestamp"]) - _seconds(last_failure["timestamp"])
    assert gap >= 1.5
    wait_until(lambda: fleet.counts() == (0, 0), 20, "the message to be deleted")

    # EventBridge delivers at least once: the same event again as a new message.
    duplicate = fleet.sqs.send_message(
        QueueUrl=fleet.queue_url, MessageBody=(out / "event.json").read_text()
    )["MessageId"]
    dup = watch.wait_for("fleet.duplicate")[0]
    assert (dup["event_id"], dup["message_id"]) == (event_id, duplicate)
    wait_until(lambda: fleet.counts() == (0, 0), 20, "the duplicate to be deleted")
    assert watch.terminate() == 0
    no_crash(watch)
    assert read_lines(out / "acted") == [event_id]  # acted on exactly once
    assert [r["message_id"] for r in watch.logs("hook.started")].count(duplicate) == 0
    assert len(watch.lines()) == 1 + len(watch.logs("fleet.hooks_failed"))


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_messages_that_are_not_events_are_logged_and_go_to_the_dead_letter_queue(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet(max_receive_count=1)
    out = tmp_path / "out"
    out.mkdir()
    hooks = make_hooks(tmp_path, ("10-act", 'echo "$SPOTWATCH_EVENT_ID" >> "$OUT_DIR/acted"\n'))
    bad = {
        fleet.sqs.send_message(QueueUrl=fleet.queue_url, MessageBody=body)["MessageId"]: why
        for body, why in [
            ("this is { not json", "not JSON"),
            ('{"hello": "world"}', "not an EventBridge event"),
            ("[1, 2, 3]", "JSON list"),
        ]
    }
    (good,) = fleet.put((INTERRUPTION, {"instance-id": "i-0g00d", "instance-action": "stop"}))
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--visibility-timeout", "1", "--wait-seconds", "1"], env=watch_env(out))

    watch.wait_for("fleet.handled")
    # maxReceiveCount 1: the second receive moves each one to the dead-letter queue.
    wait_until(lambda: fleet.counts(fleet.dlq_url)[0] == 3, 30, "3 messages in the DLQ")
    assert watch.terminate() == 0
    no_crash(watch)
    logged = {r["message_id"]: r["reason"] for r in watch.logs("fleet.bad_message")}
    assert set(logged) == set(bad)
    for message_id, why in bad.items():
        assert why in logged[message_id]
    assert read_lines(out / "acted") == [good]  # no hook ran for them
    assert fleet.counts() == (0, 0)
    assert len(watch.lines()) == 1


# -- several watchers, one queue ---------------------------------------------------------


@pytest.mark.timeout(300)
def test_two_watchers_share_200_events_each_handled_exactly_once(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    # One short append per event: atomic with O_APPEND, so both watchers share the file.
    hooks = make_hooks(tmp_path, ("10-act",
                                  'echo "$SPOTWATCH_EVENT_ID $WATCHER" >> "$OUT_DIR/acted"\n'))
    pair = [
        watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks), "--wait-seconds", "1"],
                env=watch_env(out, WATCHER=label), label=label)
        for label in ("a", "b")
    ]
    for watch in pair:
        watch.wait_for("fleet.started")
    # Fed 10 at a time, keeping the queue shallow: moto's ReceiveMessage slows
    # down with queue depth, and a fleet's queue is near-empty most of the time.
    sent: list[str] = []

    def shallow() -> bool:
        return len(sent) - len(read_lines(out / "acted")) <= 40

    for batch in range(20):
        wait_until(shallow, 60, "the watchers to catch up")
        sent += fleet.put(*[
            (INTERRUPTION, {"instance-id": f"i-{batch * 10 + n:017x}",
                            "instance-action": "terminate"})
            for n in range(10)
        ])
    wait_until(lambda: len(read_lines(out / "acted")) >= 200, 100, "200 events acted on")
    wait_until(lambda: fleet.counts() == (0, 0), 30, "all 200 messages deleted")
    assert [watch.terminate() for watch in pair] == [0, 0]
    acted = [line.split() for line in read_lines(out / "acted")]
    assert sorted(event_id for event_id, _ in acted) == sorted(sent)  # each exactly once
    by_watcher = {label: sum(1 for _, w in acted if w == label) for label in ("a", "b")}
    assert by_watcher["a"] > 0 and by_watcher["b"] > 0, by_watcher
    for watch in pair:
        no_crash(watch)
        assert len(watch.lines()) == by_watcher[watch.stdout_path.stem]


# -- stopping ------------------------------------------------------------------------------


def test_sigterm_lets_8_running_finish_and_hands_back_the_30_waiting_at_once(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()  # visibility timeout 60 s: a message not handed back stays hidden
    out = tmp_path / "out"
    (out / "started").mkdir(parents=True)
    hooks = make_hooks(tmp_path, ("10-slow", (
        'touch "$OUT_DIR/started/$SPOTWATCH_EVENT_ID"\n'
        "sleep 4\n"  # the 8 start well within this, even on a busy machine
        'echo "$SPOTWATCH_EVENT_ID" >> "$OUT_DIR/acted"\n'
    )))
    sent = fleet.put(*[
        (INTERRUPTION, {"instance-id": f"i-{n:017x}", "instance-action": "terminate"})
        for n in range(38)
    ])
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--wait-seconds", "1", "--workers", "8"], env=watch_env(out))
    wait_until(lambda: len(list((out / "started").iterdir())) >= 8, 60, "8 hooks to start")
    assert watch.terminate() == 0
    no_crash(watch)
    started = sorted(p.name for p in (out / "started").iterdir())
    assert len(started) == 8  # no new hook after the signal
    assert sorted(read_lines(out / "acted")) == started  # the 8 running ones finished
    assert set(started) <= set(sent)
    (stopped,) = watch.logs("fleet.stopped")
    assert stopped["reason"] == "signal" and stopped["done"] == 8
    # The 30 others are visible again at once, not after the 60 s visibility timeout.
    assert fleet.counts() == (30, 0)


@pytest.mark.timeout(120)
def test_200_events_across_50_instances_with_8_workers_once_each_one_instance_at_a_time(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    # Start and end of each event's hook, one short append each (atomic with O_APPEND).
    hooks = make_hooks(tmp_path, ("10-record", (
        'echo "start $(date +%s.%N) $SPOTWATCH_INSTANCE_ID $SPOTWATCH_EVENT_ID" >> "$OUT_DIR/log"\n'
        "sleep 0.05\n"
        'echo "end $(date +%s.%N) $SPOTWATCH_INSTANCE_ID $SPOTWATCH_EVENT_ID" >> "$OUT_DIR/log"\n'
    )))
    instances = [f"i-{n:017x}" for n in range(50)]
    steps: list[tuple[str, dict[str, Any]]] = []
    # Instances in groups of 6, each group's four rounds of events one after the
    # other: the hand of 16 then holds several events of one instance at once.
    for group in range(0, 50, 6):
        for detail_type, detail in [
            (REBALANCE, {}),
            (INTERRUPTION, {"instance-action": "terminate"}),
            (STATE_CHANGE, {"state": "shutting-down"}),
            (STATE_CHANGE, {"state": "terminated"}),
        ]:
            steps += [(detail_type, {"instance-id": i, **detail})
                      for i in instances[group : group + 6]]
    sent = fleet.put(*steps)  # each instance's four events, in this order
    order = {event_id: n for n, event_id in enumerate(sent)}
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks), "--json",
                     "--wait-seconds", "1", "--workers", "8", "--max-messages", "200"],
                    env=watch_env(out))
    assert watch.wait(timeout=100) == 0, watch.stderr()
    no_crash(watch)
    assert watch.logs("fleet.started")[0]["hand"] == 16  # 2 x workers

    records = [line.split() for line in read_lines(out / "log")]
    starts = {r[3]: (float(r[1]), r[2]) for r in records if r[0] == "start"}
    ends = {r[3]: float(r[1]) for r in records if r[0] == "end"}
    assert sorted(starts) == sorted(sent) == sorted(ends)  # each exactly once
    assert len(records) == 400
    assert len(watch.lines()) == 200 and fleet.counts() == (0, 0)
    for instance in instances:
        mine = sorted((start, event_id) for event_id, (start, i) in starts.items()
                      if i == instance)
        assert [order[e] for _, e in mine] == sorted(order[e] for _, e in mine)  # in order
        for (_, earlier), (later_start, _) in zip(mine, mine[1:]):
            assert ends[earlier] <= later_start  # never two of one instance at once
    # Up to 8 at once, and more than one: the workers did run side by side.
    moments = sorted([(t, 1) for t, _ in starts.values()] + [(t, -1) for t in ends.values()],
                     key=lambda m: (m[0], m[1]))
    running, most = 0, 0
    for _, step in moments:
        running += step
        most = max(most, running)
    assert 1 < most <= 8


def test_a_hook_longer_than_the_visibility_timeout_keeps_its_message_from_the_other_watcher(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    hooks = make_hooks(tmp_path, ("10-long", (
        'echo "$SPOTWATCH_EVENT_ID $WATCHER start" >> "$OUT_DIR/acted"\n'
        "sleep 7\n"
        'echo "$SPOTWATCH_EVENT_ID $WATCHER end" >> "$OUT_DIR/acted"\n'
    )))
    (event_id,) = fleet.put((INTERRUPTION, {"instance-id": "i-0a1", "instance-action": "stop"}))
    args = ["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks), "--wait-seconds", "1",
            "--visibility-timeout", "3"]
    first = watches(args, env=watch_env(out, WATCHER="a"), label="a")
    wait_until(lambda: read_lines(out / "acted"), 60, "the hook to start")
    second = watches(args, env=watch_env(out, WATCHER="b"), label="b")
    second.wait_for("fleet.started")
    # 7 s of hook against a 3 s timeout (extended to 6 s at a time): the second
    # watcher polls all along.
    wait_until(lambda: len(read_lines(out / "acted")) >= 2, 30, "the hook to end")
    wait_until(lambda: fleet.counts() == (0, 0), 20, "the message to be deleted")
    assert [first.terminate(), second.terminate()] == [0, 0]
    assert read_lines(out / "acted") == [f"{event_id} a start", f"{event_id} a end"]
    assert second.logs("fleet.event") == []
    assert first.logs("fleet.lost_message") == []
    for watch in (first, second):
        no_crash(watch)


def test_usage_and_queue_errors_are_one_line(
    aws_env: dict[str, str], spotwatch_cmd: list[str], moto_server: str, tmp_path: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*spotwatch_cmd, "fleet", "watch", "--log-format", "json", *args],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ))

    missing_queue = run("--queue-url", f"{moto_server}/123456789012/swtest-no-such-queue")
    assert missing_queue.returncode == 1
    assert "cannot use queue" in missing_queue.stderr
    assert "Traceback" not in missing_queue.stderr

    no_dir = run("--queue-url", f"{moto_server}/123456789012/q", "--hooks-dir",
                 str(tmp_path / "nope"))
    assert no_dir.returncode == 2 and "does not exist" in no_dir.stderr

    env = dict(os.environ)
    env.pop("SPOTWATCH_QUEUE_URL", None)
    no_url = subprocess.run([*spotwatch_cmd, "fleet", "watch"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert no_url.returncode == 2
    assert no_url.stderr.strip().splitlines() == [
        "spotwatch fleet watch: error: no queue URL: pass --queue-url or set SPOTWATCH_QUEUE_URL"
    ]


# -- tags ---------------------------------------------------------------------------------


def test_a_watcher_reads_its_regions_tags_at_start_and_every_line_carries_them(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch]
) -> None:
    import boto3

    fleet = make_fleet()
    ec2 = boto3.client("ec2")
    named = [i["InstanceId"] for i in ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=40, MaxCount=40, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "Name", "Value": "batch"}, {"Key": "pool", "Value": "spot-a"}]}],
    )["Instances"]]
    bare = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                             InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    sent = fleet.put(*[(INTERRUPTION, {"instance-id": i, "instance-action": "terminate"})
                       for i in [*named, bare]])
    watch = watches(["--queue-url", fleet.queue_url, "--json", "--max-messages", "41",
                     "--wait-seconds", "1"])
    assert watch.wait(timeout=90) == 0, watch.stderr()
    no_crash(watch)

    printed = {r["instance_id"]: r for r in map(json.loads, watch.lines())}
    assert sorted(r["event_id"] for r in printed.values()) == sorted(sent)
    for instance_id in named:
        assert printed[instance_id]["tags"] == {"Name": "batch", "pool": "spot-a"}
        assert printed[instance_id]["name"] == "batch"
    assert printed[bare]["tags"] == {}
    [snapshot] = watch.logs("fleet.tags_snapshot")
    assert snapshot["region"] == "us-east-1" and snapshot["instances"] >= 40
    assert not watch.logs("fleet.tags_failed") and not watch.logs("fleet.tags_snapshot_skipped")
    [stopped] = watch.logs("fleet.stopped")
    # The snapshot (one page in moto) and, unless it came late, one lookup of the bare
    # instance: not one call per batch of messages.
    assert stopped["tags_calls"] <= 3
    assert fleet.counts() == (0, 0)


def test_ctrl_c_during_a_long_poll_is_logged_at_once_and_stops_promptly(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    import signal
    import time

    fleet = make_fleet()
    watch = watches(["--queue-url", fleet.queue_url, "--wait-seconds", "20"])
    watch.wait_for("fleet.started")
    time.sleep(1.0)  # let the receiver enter its 20 s long poll on the empty queue
    sent = time.monotonic()
    watch.proc.send_signal(signal.SIGINT)
    watch.wait_for("fleet.stopping", timeout=5)
    assert watch.wait(timeout=15) == 0
    took = time.monotonic() - sent
    assert took < 8, f"{took:.1f} s to stop after Ctrl-C"  # not the 20 s long poll
    no_crash(watch)
    (stopping,) = watch.logs("fleet.stopping")
    assert stopping["reason"] == "signal"
    (stopped,) = watch.logs("fleet.stopped")
    assert stopped["reason"] == "signal"
