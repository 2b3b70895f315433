"""`spotwatch fleet setup`, the CloudFormation template and the fleet unit file.

Against moto's server on 127.0.0.1 over real HTTP (the ``aws_env`` fixture).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotwatch import fleet_setup
from spotwatch.fleet_events import EVENT_PATTERN

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "cloudformation" / "spotwatch-fleet.yaml"
UNIT = REPO / "systemd" / "spotwatch-fleet.service"


def unique_name() -> str:
    return f"swtest-{uuid.uuid4().hex[:10]}"


def _clients() -> tuple[Any, Any]:
    import boto3

    return boto3.client("sqs"), boto3.client("events")


@pytest.fixture
def cleanup(aws_env: dict[str, str]) -> Iterator[list[str]]:
    """Names of fleets to tear down after the test (moto is shared by the session)."""
    names: list[str] = []
    yield names
    sqs, events = _clients()
    for name in names:
        for rule in events.list_rules(NamePrefix=name).get("Rules", []):
            targets = events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", [])
            if targets:
                events.remove_targets(Rule=rule["Name"], Ids=[t["Id"] for t in targets])
            events.delete_rule(Name=rule["Name"])
        for url in sqs.list_queues(QueueNamePrefix=name).get("QueueUrls", []):
            sqs.delete_queue(QueueUrl=url)


def run_setup(
    spotwatch_cmd: list[str], env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*spotwatch_cmd, "fleet", "setup", "--log-format", "json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def log_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_setup_twice_makes_one_of_each_and_changes_nothing_the_second_time(
    aws_env: dict[str, str], spotwatch_cmd: list[str], cleanup: list[str]
) -> None:
    import os

    env = dict(os.environ)
    name = unique_name()
    cleanup.append(name)

    first = run_setup(spotwatch_cmd, env, "--queue-name", name)
    assert first.returncode == 0, first.stderr
    queue_url = first.stdout.strip()
    assert queue_url.endswith(f"/{name}")
    sqs, events = _clients()
    before = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]

    second = run_setup(spotwatch_cmd, env, "--queue-name", name)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == queue_url
    done = [e for e in log_events(second.stderr) if e["event"] == "fleet.setup.done"]
    assert done and done[0]["changes"] == 0
    assert not [e for e in log_events(second.stderr) if e["event"] == "fleet.setup.changed"]
    after = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert after["LastModifiedTimestamp"] == before["LastModifiedTimestamp"]

    # One queue, one dead-letter queue, one rule with one target.
    urls = sorted(sqs.list_queues(QueueNamePrefix=name)["QueueUrls"])
    assert [u.rsplit("/", 1)[1] for u in urls] == [name, f"{name}-dlq"]
    rules = events.list_rules(NamePrefix=name)["Rules"]
    assert [r["Name"] for r in rules] == [name]
    assert json.loads(rules[0]["EventPattern"]) == EVENT_PATTERN
    assert rules[0]["State"] == "ENABLED"
    targets = events.list_targets_by_rule(Rule=name)["Targets"]
    assert [(t["Id"], t["Arn"]) for t in targets] == [(fleet_setup.TARGET_ID, after["QueueArn"])]

    # The DLQ redrive, and the policy letting this rule (only) send.
    dlq_url = next(u for u in urls if u.endswith("-dlq"))
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = json.loads(after["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    statement = json.loads(after["Policy"])["Statement"][0]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rules[0]["Arn"]}}
    assert after["VisibilityTimeout"] == "60"
    assert after["ReceiveMessageWaitTimeSeconds"] == "20"


@pytest.mark.slow
def test_setup_brings_drifted_settings_back_in_line(
    aws_env: dict[str, str], cleanup: list[str]
) -> None:
    name = unique_name()
    cleanup.append(name)
    first = fleet_setup.setup_fleet(name, visibility_timeout=60)
    assert len(first.changes) >= 4
    sqs, events = _clients()
    # Someone changes the queue and removes the target by hand.
    sqs.set_queue_attributes(QueueUrl=first.queue_url, Attributes={"VisibilityTimeout": "7"})
    events.remove_targets(Rule=name, Ids=[fleet_setup.TARGET_ID])

    again = fleet_setup.setup_fleet(name, visibility_timeout=60, max_receive_count=3)
    assert again.queue_url == first.queue_url
    assert any("target" in c for c in again.changes)
    assert any("VisibilityTimeout" in c and "RedrivePolicy" in c for c in again.changes)
    attrs = sqs.get_queue_attributes(QueueUrl=first.queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert attrs["VisibilityTimeout"] == "60"
    assert int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]) == 3
    assert len(events.list_targets_by_rule(Rule=name)["Targets"]) == 1
    assert fleet_setup.setup_fleet(name, visibility_timeout=60, max_receive_count=3).changes == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue-name", "has space"], "queue name 'has space' is not usable"),
        (["--queue-name", "q.fifo"], "FIFO queues are not supported"),
        (["--queue-name", "ok", "--max-receive-count", "0"], "--max-receive-count must be"),
        (["--queue-name", "ok", "--visibility-timeout", "x"], "is not a whole number"),
    ],
)
def test_setup_refuses_bad_input_in_one_line(
    spotwatch_cmd: list[str], args: list[str], message: str
) -> None:
    result = subprocess.run(
        [*spotwatch_cmd, "fleet", "setup", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_setup_without_credentials_or_endpoint_fails_in_one_line(
    spotwatch_cmd: list[str], tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens on the discard port
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }
    result = subprocess.run(
        [*spotwatch_cmd, "fleet", "setup", "--queue-name", "nope", "--log-format", "json"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1 and "cannot reach AWS" in errors[0]
    assert "Traceback" not in result.stderr


# -- the CloudFormation template -------------------------------------------------------


def _template() -> dict[str, Any]:
    data = yaml.safe_load(TEMPLATE.read_text())
    assert isinstance(data, dict)
    return data


def _substitute(node: Any, refs: dict[str, str]) -> Any:
    """Replace the template's Ref / Fn::GetAtt to a resource by a placeholder string."""
    if isinstance(node, dict):
        if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][1] == "Arn":
            return refs[f"{node['Fn::GetAtt'][0]}.Arn"]
        if set(node) == {"Ref"}:
            return refs.get(node["Ref"], node)
        return {k: _substitute(v, refs) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, refs) for v in node]
    return node


def test_template_declares_what_setup_creates() -> None:
    template = _template()
    resources = template["Resources"]
    assert {r["Type"] for r in resources.values()} == {
        "AWS::SQS::Queue",
        "AWS::Events::Rule",
        "AWS::SQS::QueuePolicy",
    }
    refs = {"Queue.Arn": "QUEUE-ARN", "Rule.Arn": "RULE-ARN", "DeadLetterQueue.Arn": "DLQ-ARN",
            "MaxReceiveCount": "5"}
    rule = _substitute(resources["Rule"]["Properties"], refs)
    # One source of truth: the rule matches exactly what `fleet setup` puts on its rule.
    assert rule["EventPattern"] == EVENT_PATTERN
    assert rule["Description"] == fleet_setup.RULE_DESCRIPTION
    assert rule["Targets"] == [{"Id": fleet_setup.TARGET_ID, "Arn": "QUEUE-ARN"}]
    assert rule["State"] == "ENABLED" and rule["EventBusName"] == "default"

    policy = _substitute(resources["QueuePolicy"]["Properties"]["PolicyDocument"], refs)
    assert policy == fleet_setup.queue_policy("QUEUE-ARN", "RULE-ARN")

    queue = _substitute(resources["Queue"]["Properties"], refs)
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": "DLQ-ARN", "maxReceiveCount": "5"}
    assert queue["ReceiveMessageWaitTimeSeconds"] == fleet_setup.LONG_POLL_SECONDS
    dlq = resources["DeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == fleet_setup.DLQ_RETENTION_SECONDS
    assert dlq["QueueName"] == {"Fn::Sub": "${QueueName}" + fleet_setup.DLQ_SUFFIX}

    params = template["Parameters"]
    assert params["QueueName"]["AllowedPattern"] == fleet_setup.QUEUE_NAME.pattern
    assert params["VisibilityTimeout"]["Default"] == fleet_setup.DEFAULT_VISIBILITY_TIMEOUT
    assert params["MaxReceiveCount"]["Default"] == fleet_setup.DEFAULT_MAX_RECEIVE_COUNT
    assert "QueueUrl" in template["Outputs"]


@pytest.mark.filterwarnings("ignore:Tried to parse")
@pytest.mark.slow
def test_template_deploys_and_routes_events_to_the_queue(
    aws_env: dict[str, str], cleanup: list[str]
) -> None:
    import boto3

    name = unique_name()
    cleanup.append(name)
    cloudformation = boto3.client("cloudformation")
    stack = f"{name}-stack"
    cloudformation.create_stack(
        StackName=stack,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": "QueueName", "ParameterValue": name}],
    )
    try:
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        assert described["StackStatus"] == "CREATE_COMPLETE"
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
        sqs, events = _clients()
        entry = {
            "Source": "aws.ec2",
            "DetailType": "EC2 Spot Instance Interruption Warning",
            "Detail": json.dumps({"instance-id": "i-0cf0", "instance-action": "stop"}),
        }
        sent = events.put_events(Entries=[entry])["Entries"][0]["EventId"]
        messages = sqs.receive_message(QueueUrl=outputs["QueueUrl"], WaitTimeSeconds=2)
        bodies = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
        assert [b["id"] for b in bodies] == [sent]
        assert bodies[0]["detail"]["instance-action"] == "stop"
        # What setup would do on top of the stack changes nothing but the policy
        # (moto's CloudFormation skips AWS::SQS::QueuePolicy) and the rule description.
        result = fleet_setup.setup_fleet(name)
        assert not [c for c in result.changes if "queue" in c and "created" in c]
    finally:
        cloudformation.delete_stack(StackName=stack)


# -- the systemd unit ------------------------------------------------------------------


def test_fleet_unit_file_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    exec_start = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [
        "ExecStart=/usr/local/bin/spotwatch fleet watch --hooks-dir "
        "/etc/spotwatch/fleet-hooks.d --log-format json"
    ]
    assert re.search(r"^KillMode=mixed$", text, re.M)  # SIGTERM to the watcher only
    assert re.search(r"^EnvironmentFile=-/etc/spotwatch/fleet.env$", text, re.M)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    # verify wants ExecStart's program to exist: the unit as `spotwatch install --print
    # fleet-unit` shows it, run by this checkout's spotwatch.
    from spotwatch.install import render_fleet_unit

    script = Path(sys.executable).with_name("spotwatch")
    unit = tmp_path / "spotwatch-fleet.service"
    unit.write_text(render_fleet_unit(text, str(script)))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert result.returncode == 0 and problems == [], result.stderr
