"""Helpers for the `spotwatch fleet watch` tests: a queue, DLQ and rule per test made
with `fleet setup` against moto's server, and `fleet watch` as a subprocess; and the
in-memory SQS stand-ins (FakeSqs, FakeError, Log, NoTags, body) for the consumer loop.

Import fixtures as ``from tests.fleet_helpers import make_fleet_fixture as
make_fleet_fixture`` (see tests/helpers.py for why).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from spotwatch.fleet_setup import setup_fleet
from tests.helpers import make_hooks_dir, wait_until

INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
FULFILLMENT = "EC2 Spot Instance Request Fulfillment"
STATE_CHANGE = "EC2 Instance State-change Notification"



@dataclass
class Fleet:
    name: str
    queue_url: str
    dlq_url: str
    sqs: Any
    events: Any

    def put(self, *entries: tuple[str, dict[str, Any]]) -> list[str]:
        """put_events, 10 at a time; the event ids EventBridge gave them."""
        ids: list[str] = []
        items = [
            {"Source": "aws.ec2", "DetailType": dt, "Detail": json.dumps(detail),
             "Resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{detail['instance-id']}"]}
            for dt, detail in entries
        ]
        for start in range(0, len(items), 10):
            response = self.events.put_events(Entries=items[start : start + 10])
            assert response["FailedEntryCount"] == 0
            ids.extend(e["EventId"] for e in response["Entries"])
        return ids

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages in the queue (or in ``url``)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (int(attrs["ApproximateNumberOfMessages"]),
                int(attrs["ApproximateNumberOfMessagesNotVisible"]))


@pytest.fixture(name="make_fleet")
def make_fleet_fixture(aws_env: dict[str, str]) -> Iterator[Callable[..., Fleet]]:
    import boto3

    sqs, events = boto3.client("sqs"), boto3.client("events")
    made: list[Fleet] = []

    def make(**settings: Any) -> Fleet:
        name = f"swtest-{uuid.uuid4().hex[:10]}"
        result = setup_fleet(name, **settings)
        fleet = Fleet(name, result.queue_url, result.dlq_url, sqs, events)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        events.remove_targets(Rule=fleet.name, Ids=["spotwatch-sqs"])
        events.delete_rule(Name=fleet.name)
        sqs.delete_queue(QueueUrl=fleet.queue_url)
        sqs.delete_queue(QueueUrl=fleet.dlq_url)


class Watch:
    """A running `spotwatch fleet watch`; stdout and stderr go to files we poll."""

    def __init__(self, cmd: list[str], args: list[str], env: dict[str, str], workdir: Path,
                 label: str = "w") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / f"{label}.out"
        self.stderr_path = workdir / f"{label}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*cmd, "fleet", "watch", "--log-format", "json", *args],
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            )

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        records = []
        for line in self.stderr_path.read_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line being written
        return [r for r in records if event is None or r["event"] == event]

    def lines(self) -> list[str]:
        return self.stdout_path.read_text().splitlines()

    def wait_for(self, event: str, timeout: float = 30.0, count: int = 1) -> list[dict[str, Any]]:
        def seen() -> list[dict[str, Any]]:
            if self.proc.poll() is not None and len(self.logs(event)) < count:
                raise AssertionError(f"watcher exited {self.proc.returncode}: {self.stderr()}")
            found = self.logs(event)
            return found if len(found) >= count else []

        result: list[dict[str, Any]] = wait_until(seen, timeout, event)
        return result

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def terminate(self, timeout: float = 40.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-4000:]


@pytest.fixture(name="watches")
def watches_fixture(spotwatch_cmd: list[str], tmp_path: Path) -> Iterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def start(args: list[str], env: dict[str, str] | None = None, label: str = "w") -> Watch:
        watch = Watch(spotwatch_cmd, args, env or dict(os.environ), tmp_path / "run", label)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.kill()


def make_hooks(tmp_path: Path, *scripts: tuple[str, str]) -> Path:
    """A hooks directory of ``set -eu`` shell scripts: (name, body) pairs."""
    hooks = make_hooks_dir(tmp_path, "hooks")
    for name, body in scripts:
        path = hooks / name
        path.write_text("#!/bin/sh\nset -eu\n" + body)
        path.chmod(0o755)
    return hooks


def watch_env(out_dir: Path, **extra: str) -> dict[str, str]:
    """This environment plus OUT_DIR, where the hooks of ``make_hooks`` write."""
    env = dict(os.environ)
    env["OUT_DIR"] = str(out_dir)
    env.update(extra)
    return env


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def no_crash(watch: Watch) -> None:
    text = watch.stderr_path.read_text()
    assert "Traceback" not in text, text[-3000:]


# In-memory stand-ins for the consumer-loop tests (test_fleet_consumer, test_fleet_metrics).


def body(instance: str = "i-0abc", event_id: str | None = None) -> str:
    return json.dumps({
        "version": "0", "id": event_id or str(uuid.uuid4()), "source": "aws.ec2",
        "detail-type": "EC2 Spot Instance Interruption Warning", "account": "123456789012",
        "time": "2026-11-26T03:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"instance-id": instance, "instance-action": "terminate"},
    })


class FakeError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code, "Message": "from the fake"}}


class FakeSqs:
    """Hands out the batches it is given; records every call."""

    def __init__(self, batches: list[Any], visibility: int = 60) -> None:
        self.batches = batches
        self.visibility = visibility
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lose: set[str] = set()  # receipt handles another watcher now holds

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        return {"Attributes": {"VisibilityTimeout": str(self.visibility), "RedrivePolicy": "{}",
                               "QueueArn": "arn:aws:sqs:us-east-1:123456789012:q"}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("receive", kwargs))
        if not self.batches:
            return {"Messages": []}
        batch = self.batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return {"Messages": [
            {"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": text,
             "Attributes": {"ApproximateReceiveCount": "1"}}
            for n, text in batch
        ]}

    def change_message_visibility(self, **kwargs: Any) -> None:
        self.calls.append(("visibility", kwargs))
        if kwargs["ReceiptHandle"] in self.lose:
            raise FakeError("ReceiptHandleIsInvalid")

    def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("visibility_batch", kwargs))
        failed = [{"Id": e["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True}
                  for e in kwargs["Entries"] if e["ReceiptHandle"] in self.lose]
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]
                               if e["ReceiptHandle"] not in self.lose], "Failed": failed}

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("delete", kwargs))
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]], "Failed": []}

    def deleted(self) -> list[str]:
        return [e["ReceiptHandle"] for name, kw in self.calls if name == "delete"
                for e in kw["Entries"]]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kw for n, kw in self.calls if n == name]

    def batched_visibility(self) -> list[tuple[str, int]]:
        """(receipt, timeout) of every ChangeMessageVisibilityBatch entry, in order."""
        return [(e["ReceiptHandle"], e["VisibilityTimeout"])
                for kw in self.named("visibility_batch") for e in kw["Entries"]]


class Log:
    """A structlog-shaped logger that keeps what it is told."""

    def __init__(self, records: list[dict[str, Any]] | None = None, **bound: Any) -> None:
        self.records = records if records is not None else []
        self.bound = bound

    def bind(self, **fields: Any) -> Log:
        return Log(self.records, **{**self.bound, **fields})

    def _record(self, level: str, event: str, **fields: Any) -> None:
        self.records.append({"event": event, "level": level, **self.bound, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._record("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._record("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._record("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._record("error", event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._record("exception", event, **fields)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == name]


class NoTags:
    """Tags are tested against moto in test_fleet_watch.py."""

    def prefetch(self, wanted: Any) -> None:
        list(wanted)

    def peek(self, region: str, instance_id: str) -> dict[str, str]:
        return {}

    def snapshot_due(self) -> list[str]:
        return []

    def snapshot(self, region: str) -> None:
        raise AssertionError("no region is ever due a snapshot here")
