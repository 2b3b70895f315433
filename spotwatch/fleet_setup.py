"""``spotwatch fleet setup``: the SQS queue, its dead-letter queue, the EventBridge
rule, its target and the queue policy, created or brought in line idempotently.

Every step reads first and writes only what differs, so a second run changes
nothing (and says so). The desired state is built by pure functions
(``queue_policy``, ``redrive_policy``, ...); the same shapes are in
``cloudformation/spotwatch-fleet.yaml`` for teams that deploy that way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spotwatch import regions
from spotwatch.errors import SpotwatchError, UsageError
from spotwatch.fleet_events import EVENT_PATTERN
from spotwatch.logs import get_logger

# Short enough that "<name>-dlq" is a valid queue name and <name> a valid rule name.
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
DLQ_SUFFIX = "-dlq"
TARGET_ID = "spotwatch-sqs"
RULE_DESCRIPTION = (
    "spotwatch fleet: EC2 spot interruption, rebalance, fulfillment, state change, "
    "ASG termination, capacity reservation interruption, capacity block expiration, "
    "Health scheduled change"
)

DEFAULT_VISIBILITY_TIMEOUT = 60
DEFAULT_MAX_RECEIVE_COUNT = 5
MAX_VISIBILITY_TIMEOUT = 43200  # SQS: 12 hours
LONG_POLL_SECONDS = 20
DLQ_RETENTION_SECONDS = 1209600  # 14 days, the SQS maximum: time to look at poison messages


@dataclass(frozen=True)
class SetupResult:
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    rule_arn: str
    changes: tuple[str, ...]  # what this run created or changed; empty on a re-run


def check_queue_name(name: str) -> None:
    if not QUEUE_NAME.match(name):
        raise UsageError(
            f"queue name {name!r} is not usable: use 1-60 letters, digits, '-' or '_' "
            "(the rule takes the same name and the dead-letter queue adds '-dlq'; "
            "FIFO queues are not supported)"
        )


def check_settings(visibility_timeout: int, max_receive_count: int) -> None:
    if not 0 <= visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
        raise UsageError(f"--visibility-timeout must be 0..{MAX_VISIBILITY_TIMEOUT} seconds")
    if not 1 <= max_receive_count <= 1000:
        raise UsageError("--max-receive-count must be 1..1000")


# -- the desired state (pure) ---------------------------------------------------


def event_pattern_json() -> str:
    return json.dumps(EVENT_PATTERN, sort_keys=True)


def redrive_policy(dlq_arn: str, max_receive_count: int) -> dict[str, Any]:
    return {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}


def queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """Lets EventBridge send to the queue, for this rule only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "spotwatch-eventbridge",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


def queue_attributes(
    visibility_timeout: int, dlq_arn: str, max_receive_count: int, queue_arn: str, rule_arn: str
) -> dict[str, str]:
    return {
        "VisibilityTimeout": str(visibility_timeout),
        "ReceiveMessageWaitTimeSeconds": str(LONG_POLL_SECONDS),
        "RedrivePolicy": json.dumps(redrive_policy(dlq_arn, max_receive_count)),
        "Policy": json.dumps(queue_policy(queue_arn, rule_arn)),
    }


def attributes_to_change(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``desired`` that differs from ``current`` (JSON compared as data)."""
    return {
        key: value
        for key, value in desired.items()
        if _normalise(current.get(key)) != _normalise(value)
    }


def _normalise(value: str | None) -> Any:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return value
    return _stringify(data)


def _stringify(data: Any) -> Any:
    # SQS gives maxReceiveCount back as a string or a number depending on who wrote it.
    if isinstance(data, dict):
        return {k: _stringify(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_stringify(v) for v in data]
    return str(data)


# -- the I/O ----------------------------------------------------------------------


def setup_fleet(
    queue_name: str,
    *,
    region: str | None = None,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT,
    session: Any = None,
) -> SetupResult:
    """Create or update the queue, DLQ, rule, target and policy; report what changed."""
    check_queue_name(queue_name)
    check_settings(visibility_timeout, max_receive_count)
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session if session is not None else boto3.session.Session()
    found = regions.resolve(region, os.environ, lambda: session.region_name,
                            lambda: regions.instance_region(os.environ))
    if found is None:
        raise UsageError(regions.no_region("no AWS region for the queue and rule"))
    region = found.name
    try:
        sqs = session.client("sqs", region_name=region)
        events = session.client("events", region_name=region)
        return _Setup(sqs, events).run(queue_name, visibility_timeout, max_receive_count)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SpotwatchError(
            f"{exc.operation_name} failed: {error.get('Code', '?')}: {error.get('Message', '')}"
            f"{_permission_hint(error.get('Code', ''))}"
        ) from None
    except BotoCoreError as exc:
        raise SpotwatchError(f"cannot reach AWS: {exc}") from None


def _permission_hint(code: str) -> str:
    if "AccessDenied" in code or code in ("UnauthorizedOperation", "AuthorizationError"):
        return " (see the README's IAM policy for 'fleet setup')"
    return ""


class _Setup:
    def __init__(self, sqs: Any, events: Any) -> None:
        self.sqs = sqs
        self.events = events
        self.log = get_logger()
        self.changes: list[str] = []

    def run(self, name: str, visibility_timeout: int, max_receive_count: int) -> SetupResult:
        dlq_url = self._ensure_queue(
            name + DLQ_SUFFIX, {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
        )
        dlq_arn = self._queue_arn(dlq_url)
        queue_url = self._ensure_queue(name, {})
        queue_arn = self._queue_arn(queue_url)
        rule_arn = self._ensure_rule(name)
        self._ensure_target(name, queue_arn)
        desired = queue_attributes(visibility_timeout, dlq_arn, max_receive_count, queue_arn,
                                   rule_arn)
        self._ensure_attributes(queue_url, desired)
        self.log.info("fleet.setup.done", queue_url=queue_url, rule_arn=rule_arn,
                      dlq_url=dlq_url, changes=len(self.changes))
        return SetupResult(queue_url, queue_arn, dlq_url, dlq_arn, rule_arn, tuple(self.changes))

    def _changed(self, what: str, **fields: Any) -> None:
        self.changes.append(what)
        self.log.info("fleet.setup.changed", what=what, **fields)

    def _ensure_queue(self, name: str, attributes: Mapping[str, str]) -> str:
        try:
            url = str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except self.sqs.exceptions.QueueDoesNotExist:
            created = self.sqs.create_queue(QueueName=name, Attributes=dict(attributes))
            url = str(created["QueueUrl"])
            self._changed(f"created queue {name}", queue_url=url)
            return url
        self._ensure_attributes(url, attributes)
        self.log.info("fleet.setup.exists", queue=name, queue_url=url)
        return url

    def _ensure_attributes(self, url: str, desired: Mapping[str, str]) -> None:
        if not desired:
            return
        current = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(desired))
        change = attributes_to_change(current.get("Attributes", {}), desired)
        if change:
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes=change)
            self._changed(f"set {', '.join(sorted(change))} on {url}", queue_url=url)

    def _queue_arn(self, url: str) -> str:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    def _ensure_rule(self, name: str) -> str:
        pattern = event_pattern_json()
        try:
            rule = self.events.describe_rule(Name=name)
        except self.events.exceptions.ResourceNotFoundException:
            rule = None
        if rule is not None:
            same = (
                _normalise(rule.get("EventPattern")) == _normalise(pattern)
                and rule.get("State") == "ENABLED"
                and rule.get("Description", "") == RULE_DESCRIPTION
            )
            if same:
                self.log.info("fleet.setup.exists", rule=name, rule_arn=rule["Arn"])
                return str(rule["Arn"])
        arn = str(
            self.events.put_rule(
                Name=name,
                EventPattern=pattern,
                State="ENABLED",
                Description=RULE_DESCRIPTION,
            )["RuleArn"]
        )
        self._changed(f"{'updated' if rule else 'created'} rule {name}", rule_arn=arn)
        return arn

    def _ensure_target(self, rule: str, queue_arn: str) -> None:
        targets = self.events.list_targets_by_rule(Rule=rule).get("Targets", [])
        ours = [t for t in targets if t.get("Id") == TARGET_ID]
        if ours and ours[0].get("Arn") == queue_arn and not ours[0].get("InputTransformer"):
            self.log.info("fleet.setup.exists", rule=rule, target=TARGET_ID)
        else:
            response = self.events.put_targets(
                Rule=rule, Targets=[{"Id": TARGET_ID, "Arn": queue_arn}]
            )
            if response.get("FailedEntryCount"):
                raise SpotwatchError(
                    f"could not add the queue as the rule's target: {response['FailedEntries']}"
                )
            self._changed(f"{'updated' if ours else 'added'} target {TARGET_ID} on rule {rule}")
        others = [t.get("Id") for t in targets if t.get("Id") != TARGET_ID]
        if others:
            self.log.warning("fleet.setup.other_targets", rule=rule, targets=others,
                             note="left alone; spotwatch manages only its own target")
