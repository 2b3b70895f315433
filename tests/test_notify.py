"""`spotwatch notify`: the record and template (pure), then the real command against a
local HTTP receiver and moto's server (SNS, EventBridge, the EC2 tag)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spotwatch import notify
from spotwatch.errors import UsageError
from spotwatch.hook_context import HookContext, from_environment
from tests.helpers import REPO

TRICKY = 'quote " back \\ nl \n tab \t é 東 \u2028 end'


def hook_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(key, None)
    env.update({
        "SPOTWATCH_EVENT": "spot-interruption",
        "SPOTWATCH_ACTION": "terminate",
        "SPOTWATCH_NOTICE_TIME": "2026-11-26T03:00:25Z",
        "SPOTWATCH_DEADLINE": str(int(time.time()) + 120),
        "SPOTWATCH_SECONDS_LEFT": "118",
        "SPOTWATCH_NOTICE_ID": "0123456789abcdef",
        "SPOTWATCH_INSTANCE_ID": "i-0123456789abcdef0",
        "SPOTWATCH_INSTANCE_TYPE": "m5.large",
        "SPOTWATCH_REGION": "us-east-1",
        "SPOTWATCH_AZ": "us-east-1a",
        "SPOTWATCH_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": str(REPO),
    })  # fmt: skip
    env.update(extra)
    return env


def run_notify(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:  # noqa: E501
    return subprocess.run(
        [sys.executable, "-m", "spotwatch", "notify", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


# -- pure ------------------------------------------------------------------------------


def context(**fields: Any) -> HookContext:
    base: dict[str, Any] = {
        "event": "spot-interruption", "action": "terminate",
        "notice_time": "2026-11-26T03:00:25Z", "notice_id": "n1", "deadline": 1_800_000_000.0,
        "instance_id": "i-0abc", "instance_type": "m5.large", "region": "us-east-1",
        "availability_zone": "us-east-1a",
    }  # fmt: skip
    base.update(fields)
    return HookContext(**base)


def test_template_is_valid_json_whatever_the_values_hold() -> None:
    ctx = context(notice_time=TRICKY, instance_type=TRICKY, event=TRICKY)
    values = notify.record(ctx, now=1_800_000_000.0, left=5, hostname=TRICKY, message_id="m")
    template = notify.parse_template(
        '{"text": "{{event}} on {{instance_id}} \\"{{instance_type}}\\"", "left": "{{seconds_left}}",'  # noqa: E501
        ' "drill": "{{drill}}", "nested": ["{{hostname}}", {"{{action}}": "at {{notice_time}}"}]}',
        "t.json",
    )
    body = json.loads(json.dumps(notify.render(template, values)))
    assert body["text"] == f'{TRICKY} on i-0abc "{TRICKY}"'
    assert body["left"] == 5 and body["drill"] is False  # a lone placeholder keeps its type
    assert body["nested"] == [TRICKY, {"terminate": f"at {TRICKY}"}]


def test_template_names_only_known_fields() -> None:
    with pytest.raises(UsageError, match="unknown field"):
        notify.parse_template('{"a": "{{instance}}"}', "t.json")
    with pytest.raises(UsageError, match="not JSON"):
        notify.parse_template("{nope", "t.json")


def test_every_documented_field_is_in_the_record() -> None:
    values = notify.record(context(), now=0.0, left=1, hostname="h", message_id="m")
    assert tuple(values) == notify.FIELDS
    doc = (REPO / "docs" / "actions" / "notify.md").read_text()
    for name in notify.FIELDS:
        assert f"`{name}`" in doc, name


def test_summaries_for_shutdown_resume_and_drill() -> None:
    assert "shutting down (poweroff), no notice" in notify.summary(
        context(event="shutdown", shutdown="poweroff"), 3
    )
    resumed = notify.summary(context(phase="resume"), None)
    assert resumed.startswith("resume on i-0abc") and "running again after spot-interruption" in resumed  # noqa: E501
    assert notify.summary(context(drill=True), 7).startswith("[drill] spot-interruption on i-0abc")
    assert context(phase="resume").key() == "resume:n1"


def test_tag_value_and_sns_subject() -> None:
    values = notify.record(context(), now=0.0, left=1, hostname="h", message_id="m")
    assert notify.tag_value(context(), values) == "spot-interruption@2026-11-26T03:00:25Z"
    assert notify.sns_subject("a\nb é" + "x" * 200).startswith("a b ?")
    assert len(notify.sns_subject("x" * 300)) == 100


def test_headers_from_the_settings_file() -> None:
    env = {"SPOTWATCH_NOTIFY_HEADER_X_API_KEY": "k1", "SPOTWATCH_NOTIFY_HEADER_AUTHORIZATION": "Bearer t"}  # noqa: E501
    assert notify.headers_from_settings(env) == [("Authorization", "Bearer t"), ("X-Api-Key", "k1")]
    with pytest.raises(UsageError):
        notify.parse_header("no colon")


def test_rebalance_is_not_an_end_unless_asked() -> None:
    settings = notify.Settings(destinations=(notify.Destination(notify.TAG, "instance"),))
    assert "rebalance" in notify.skip_reason(context(event="rebalance-recommendation"), settings)
    asked = notify.Settings(destinations=settings.destinations, on_rebalance=True)
    assert notify.skip_reason(context(event="rebalance-recommendation"), asked) == ""


def test_destinations_from_settings_and_bad_ones() -> None:
    env = {"SPOTWATCH_WEBHOOK_URL": "https://hooks.example/x", "SPOTWATCH_NOTIFY_TAG": "true"}
    found = notify.destinations_from({}, False, env)
    assert [d.kind for d in found] == [notify.SLACK, notify.TAG]
    assert found[0].label == "slack https://hooks.example"  # the secret path is not shown
    with pytest.raises(UsageError, match="ARN"):
        notify.destinations_from({notify.SNS: ["my-topic"]}, False, {})
    with pytest.raises(UsageError, match="http"):
        notify.destinations_from({notify.WEBHOOK: ["file:///etc/passwd"]}, False, {})


def test_the_context_reads_the_hook_environment() -> None:
    ctx = from_environment({"SPOTWATCH_DEADLINE": "100", "SPOTWATCH_HOOK_DEADLINE": "90",
                            "SPOTWATCH_PHASE": "resume"})  # fmt: skip
    assert ctx.act_by(0.0) == 89.0 and ctx.resuming
    assert from_environment({}).act_by(10.0) == 70.0
    with pytest.raises(UsageError, match="epoch seconds"):
        from_environment({"SPOTWATCH_DEADLINE": "soon"})


# -- the command against a local receiver ----------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.arrived: list[float] = []  # wall-clock time of each request
        self.headers: list[dict[str, str]] = []
        self.statuses: list[int] = []  # answers to give, in order; then 200
        self.lock = threading.Lock()

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(b.decode("utf-8")) for b in self.raw]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.raw.append(body)
                state.arrived.append(time.time())
                state.headers.append(dict(self.headers))
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hook/secret-token"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_tricky_values_reach_the_webhook_as_valid_json(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    template = tmp_path / "t.json"
    template.write_text('{"msg": "{{summary}}", "host": "{{hostname}}", "t": "{{notice_time}}",'
                        ' "type": "{{instance_type}}", "left": "{{seconds_left}}"}')  # fmt: skip
    env = hook_env(tmp_path, SPOTWATCH_NOTICE_TIME=TRICKY, SPOTWATCH_INSTANCE_TYPE=TRICKY,
                   SPOTWATCH_AZ=TRICKY, SPOTWATCH_NOTIFY_HEADER_X_API_KEY="k-1")  # fmt: skip
    plain = run_notify(env, "--webhook", url)
    assert plain.returncode == 0, plain.stderr
    env["SPOTWATCH_NOTICE_ID"] = "another"
    templated = run_notify(env, "--webhook", url, "--template", str(template))
    assert templated.returncode == 0, templated.stderr
    record, filled = state.bodies
    assert record["notice_time"] == TRICKY and record["instance_type"] == TRICKY
    assert record["availability_zone"] == TRICKY and record["event"] == "spot-interruption"
    assert record["seconds_left"] == 118 and record["instance_id"] == "i-0123456789abcdef0"
    assert filled["t"] == TRICKY and filled["type"] == TRICKY and filled["left"] == 118
    assert TRICKY in filled["msg"]
    assert state.headers[0]["X-Api-Key"] == "k-1"
    assert state.headers[0]["Content-Type"] == "application/json"
    assert "secret-token" not in plain.stdout + plain.stderr


@pytest.mark.slow
def test_one_message_per_end_across_a_restart(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    env = hook_env(tmp_path, SPOTWATCH_NOTIFY_WEBHOOK_URL=url)
    first = run_notify(env)
    again = run_notify(env)  # the hook run again after a restart of spotwatch
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert len(state.raw) == 1
    assert "already sent for this notice" in again.stdout
    env["SPOTWATCH_PHASE"] = "resume"  # the way back is a message of its own
    assert run_notify(env).returncode == 0
    assert len(state.raw) == 2 and state.bodies[1]["phase"] == "resume"


@pytest.mark.slow
def test_retries_then_sends(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.statuses = [503, 429]
    result = run_notify(hook_env(tmp_path), "--webhook", url)
    assert result.returncode == 0, result.stderr
    assert len(state.raw) == 3 and "(attempt 3)" in result.stdout


@pytest.mark.slow
def test_retries_stop_at_the_deadline(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.statuses = [503] * 1000
    # A loaded machine may take seconds to start Python: what is asserted is the
    # decision (it retried, then gave up, sending nothing after the deadline),
    # not how many attempts fit.
    deadline = int(time.time() + 6)
    env = hook_env(tmp_path, SPOTWATCH_DEADLINE=str(deadline))
    result = run_notify(env, "--webhook", url)
    assert result.returncode == 1
    assert "gave up at the deadline" in result.stderr and "HTTP 503" in result.stderr
    assert 1 <= len(state.raw) <= 14
    assert max(state.arrived) < deadline, "a retry was sent after the deadline"
    assert time.time() < deadline + 15  # it stopped, rather than retrying 1000 times
    # Not sent, so not marked: a later run tries again.
    state.statuses = []
    assert run_notify(hook_env(tmp_path), "--webhook", url).returncode == 0


@pytest.mark.slow
def test_unconfigured_and_bad_input(tmp_path: Path) -> None:
    result = run_notify(hook_env(tmp_path))
    assert result.returncode == 0 and "no destination set" in result.stdout
    bad = run_notify(hook_env(tmp_path), "--sns-topic", "nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    bad = run_notify(hook_env(tmp_path, SPOTWATCH_DEADLINE="later"), "--tag")
    assert bad.returncode == 2 and "epoch seconds" in bad.stderr


# -- AWS destinations against moto's server --------------------------------------------


@pytest.mark.slow
def test_sns_eventbridge_and_the_tag_each_get_the_record(
    tmp_path: Path, aws_env: dict[str, str]
) -> None:
    import boto3

    region = "us-east-1"
    sqs: Any = boto3.client("sqs", region_name=region)
    sns: Any = boto3.client("sns", region_name=region)
    events: Any = boto3.client("events", region_name=region)
    ec2: Any = boto3.client("ec2", region_name=region)
    suffix = uuid.uuid4().hex[:8]

    def queue(name: str) -> tuple[str, str]:
        url = sqs.create_queue(QueueName=f"{name}-{suffix}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return url, arn["Attributes"]["QueueArn"]

    sns_queue, sns_queue_arn = queue("sns")
    topic = sns.create_topic(Name=f"ending-{suffix}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=sns_queue_arn,
                  Attributes={"RawMessageDelivery": "true"})  # fmt: skip
    bus = f"ops-{suffix}"
    events.create_event_bus(Name=bus)
    eb_queue, eb_queue_arn = queue("eb")
    events.put_rule(Name=f"ending-{suffix}", EventBusName=bus,
                    EventPattern=json.dumps({"detail-type": [notify.DETAIL_TYPE]}))  # fmt: skip
    events.put_targets(Rule=f"ending-{suffix}", EventBusName=bus,
                       Targets=[{"Id": "q", "Arn": eb_queue_arn}])  # fmt: skip
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]  # noqa: E501

    env = hook_env(tmp_path, SPOTWATCH_INSTANCE_ID=instance, SPOTWATCH_INSTANCE_TYPE=TRICKY,
                   SPOTWATCH_NOTIFY_SNS_TOPIC=topic, SPOTWATCH_NOTIFY_EVENT_BUS=bus,
                   SPOTWATCH_NOTIFY_TAG="true", **aws_env)  # fmt: skip
    result = run_notify(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": sent") == 3
    assert run_notify(env).stdout.count("already sent") == 3

    def receive(url: str) -> list[Any]:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    [published] = receive(sns_queue)
    assert published["instance_id"] == instance and published["instance_type"] == TRICKY
    [event] = receive(eb_queue)
    assert event["detail-type"] == "spotwatch Instance Ending" and event["source"] == "spotwatch"
    assert event["detail"]["instance_id"] == instance and event["detail"]["event"] == "spot-interruption"  # noqa: E501
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance]}])["Tags"]
    assert {"Key": "spotwatch:ending", "Value": "spot-interruption@2026-11-26T03:00:25Z"} in [
        {"Key": t["Key"], "Value": t["Value"]} for t in tags
    ]
