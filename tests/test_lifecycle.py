"""spotwatch.lifecycle against the fake Auto Scaling query API, with a real boto3 client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from spotwatch import lifecycle
from tests.fake_autoscaling import FakeAutoScaling


@pytest.fixture
def fake() -> Iterator[FakeAutoScaling]:
    with FakeAutoScaling() as server:
        server.add_instance("i-0abc", group="web", hooks={"drain": 120, "quiet": None})
        yield server


def test_all_four_actions_through_boto3(fake: FakeAutoScaling) -> None:
    client = fake.client()
    assert lifecycle.find_group(client, "i-0abc") == "web"
    assert lifecycle.find_group(client, "i-0nothere") is None
    assert lifecycle.heartbeat_timeout(client, "web", "drain") == 120.0
    assert lifecycle.heartbeat_timeout(client, "web", "quiet") is None
    assert lifecycle.heartbeat_timeout(client, "web", "nosuch") is None
    lifecycle.record_heartbeat(client, group="web", hook="drain", instance_id="i-0abc")
    lifecycle.complete_action(client, group="web", hook="drain", instance_id="i-0abc")
    assert fake.completed("i-0abc") == "CONTINUE"
    (beat,) = fake.calls_of("RecordLifecycleActionHeartbeat")
    assert beat.params == {
        "AutoScalingGroupName": "web",
        "LifecycleHookName": "drain",
        "InstanceId": "i-0abc",
    }
    (done,) = fake.calls_of("CompleteLifecycleAction")
    assert done.params["LifecycleActionResult"] == "CONTINUE"
    # A second completion finds no action waiting, as on AWS.
    with pytest.raises(ClientError) as caught:
        lifecycle.complete_action(client, group="web", hook="drain", instance_id="i-0abc")
    assert lifecycle.error_code(caught.value) == "ValidationError"
    assert lifecycle.missing_permission(caught.value) is None


def test_token_instead_of_instance(fake: FakeAutoScaling) -> None:
    client = fake.client()
    lifecycle.record_heartbeat(
        client, group="web", hook="drain", token="0123456789abcdef0123456789abcdef0001"
    )
    (beat,) = fake.calls_of("RecordLifecycleActionHeartbeat")
    assert beat.params["LifecycleActionToken"] == "0123456789abcdef0123456789abcdef0001"
    assert "InstanceId" not in beat.params
    with pytest.raises(ValueError):
        lifecycle.record_heartbeat(client, group="web", hook="drain")


@pytest.mark.parametrize(
    "action",
    [
        "DescribeAutoScalingInstances",
        "DescribeLifecycleHooks",
        "RecordLifecycleActionHeartbeat",
        "CompleteLifecycleAction",
    ],
)
def test_access_denied_names_the_missing_permission(fake: FakeAutoScaling, action: str) -> None:
    client = fake.client()
    fake.fail(action, "access-denied")
    calls = {
        "DescribeAutoScalingInstances": lambda: lifecycle.find_group(client, "i-0abc"),
        "DescribeLifecycleHooks": lambda: lifecycle.heartbeat_timeout(client, "web", "drain"),
        "RecordLifecycleActionHeartbeat": lambda: lifecycle.record_heartbeat(
            client, group="web", hook="drain", instance_id="i-0abc"
        ),
        "CompleteLifecycleAction": lambda: lifecycle.complete_action(
            client, group="web", hook="drain", instance_id="i-0abc"
        ),
    }
    with pytest.raises(ClientError) as caught:
        calls[action]()
    assert lifecycle.missing_permission(caught.value) == f"autoscaling:{action}"


def test_missing_permission_without_a_message_uses_the_operation() -> None:
    error = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": ""}}, "CompleteLifecycleAction"
    )
    assert lifecycle.missing_permission(error) == "autoscaling:CompleteLifecycleAction"
    throttled = ClientError({"Error": {"Code": "Throttling", "Message": "x"}}, "X")
    assert lifecycle.missing_permission(throttled) is None
    assert lifecycle.error_code(throttled) == "Throttling"


def test_injected_failures_then_recovery(fake: FakeAutoScaling) -> None:
    client = fake.client()
    fake.fail("CompleteLifecycleAction", "throttling", times=1)
    fake.fail("CompleteLifecycleAction", "no-such-hook", times=1)
    for code in ("Throttling", "ValidationError"):
        with pytest.raises(ClientError) as caught:
            lifecycle.complete_action(client, group="web", hook="drain", instance_id="i-0abc")
        assert lifecycle.error_code(caught.value) == code
    lifecycle.complete_action(client, group="web", hook="drain", instance_id="i-0abc")
    answered = [c.answered for c in fake.calls_of("CompleteLifecycleAction")]
    assert answered == ["throttling", "no-such-hook", "ok"]


def test_down_is_a_connection_error(fake: FakeAutoScaling) -> None:
    fake.fail("*", "down")
    with pytest.raises((EndpointConnectionError, ConnectionError, Exception)) as caught:
        lifecycle.find_group(fake.client(), "i-0abc")
    assert not isinstance(caught.value, ClientError)
    assert lifecycle.missing_permission(caught.value) is None


def test_heartbeater_beats_until_stopped_and_survives_errors() -> None:
    beats: list[float] = []
    errors: list[BaseException] = []

    def beat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 2:
            raise RuntimeError("throttled")

    hb = lifecycle.Heartbeater(beat, 0.05, on_error=errors.append).start()
    deadline = time.monotonic() + 10
    while len(beats) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    hb.stop(timeout=5)
    assert not hb.running
    assert len(beats) >= 4 and len(errors) == 1
    assert hb.beats == len(beats) - 1
    count = len(beats)
    time.sleep(0.15)
    assert len(beats) == count


def test_heartbeat_interval_is_half_the_timeout() -> None:
    assert lifecycle.heartbeat_interval(120) == 60
    assert lifecycle.heartbeat_interval(None) == lifecycle.FALLBACK_HEARTBEAT_SECONDS


def test_endpoint_from_environment() -> None:
    assert lifecycle.endpoint_url({"AWS_ENDPOINT_URL": "http://a"}) == "http://a"
    assert (
        lifecycle.endpoint_url(
            {"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_AUTO_SCALING": "http://b"}
        )
        == "http://b"
    )
    assert lifecycle.endpoint_url({}) is None


def test_make_client_reaches_the_fake(
    fake: FakeAutoScaling, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = lifecycle.make_client("us-east-1", endpoint=fake.url)
    assert lifecycle.find_group(client, "i-0abc") == "web"


def test_importing_lifecycle_does_not_import_boto3() -> None:
    code = "import sys, spotwatch.lifecycle; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
