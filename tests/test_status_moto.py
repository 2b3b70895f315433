"""`spotwatch status` as a subprocess against moto's server over real HTTP.

The session's moto server is shared with other tests: every test tags its own
requests uniquely and filters by that tag (or by its own ids), never resets
moto, and changes only its own requests in moto's backend.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import boto3
import pytest

ACCOUNT = "123456789012"  # moto's default account
TAG = "spotwatch-status-test"


def make_requests(region: str, count: int = 2) -> tuple[str, list[dict[str, Any]]]:
    """``count`` fulfilled spot requests tagged with a fresh value; (value, requests)."""
    value = uuid.uuid4().hex
    ec2 = boto3.client("ec2", region_name=region)
    answer = ec2.request_spot_instances(
        InstanceCount=count,
        LaunchSpecification={"ImageId": "ami-12345678", "InstanceType": "t3.micro"},
        TagSpecifications=[{"ResourceType": "spot-instances-request",
                            "Tags": [{"Key": TAG, "Value": value}]}],
    )
    return value, answer["SpotInstanceRequests"]


def backend_request(region: str, request_id: str) -> Any:
    from moto.backends import get_backend

    return get_backend("ec2")[ACCOUNT][region].spot_instance_requests[request_id]


def set_code(region: str, request_id: str, code: str, message: str = "") -> None:
    """What EC2 does when it marks a request: moto keeps the code in its backend object."""
    request = backend_request(region, request_id)
    if isinstance(getattr(type(request), "status", None), property):
        request._status_code = code  # moto 5.2
    else:
        request.status = code  # moto 5.1 (the last for Python 3.9)
    request.status_message = message


def _moto_filters_by_instance_id() -> bool:
    from moto.ec2.models.spot_requests import SpotInstanceRequest

    return hasattr(SpotInstanceRequest, "instance_id")


needs_instance_id_filter = pytest.mark.skipif(
    not _moto_filters_by_instance_id(),
    reason="this moto (5.1.x, what pip picks on Python 3.9) lacks DescribeSpotInstanceRequests' "
    "instance-id filter",
)


def status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spotwatch", "status", *args],
                          capture_output=True, text=True, timeout=timeout)


def rows(stdout: str) -> list[list[str]]:
    """The table's data rows, split on whitespace (header and summary dropped)."""
    return [line.split() for line in stdout.splitlines()[1:-1]]


@pytest.mark.slow
def test_by_tag_lists_both_requests_healthy(aws_env: dict[str, str]) -> None:
    value, made = make_requests("us-east-1")
    done = status("--tag", f"{TAG}={value}")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert sorted(r[0] for r in rows(done.stdout)) == sorted(
        m["SpotInstanceRequestId"] for m in made)
    assert all(r[3] == "fulfilled" and "healthy:" in " ".join(r) for r in rows(done.stdout))
    assert done.stdout.splitlines()[-1] == "2 requests: 2 healthy"


@pytest.mark.slow
def test_by_request_id(aws_env: dict[str, str]) -> None:
    _, made = make_requests("us-east-1")
    by_request = status(made[1]["SpotInstanceRequestId"], "--json")
    assert by_request.returncode == 0, by_request.stderr
    (found,) = json.loads(by_request.stdout)
    assert (found["request_id"], found["instance_id"]) == (
        made[1]["SpotInstanceRequestId"], made[1]["InstanceId"])
    assert (found["state"], found["status_code"], found["class"], found["region"]) == (
        "active", "fulfilled", "healthy", "us-east-1")


@pytest.mark.slow
@needs_instance_id_filter
def test_by_instance_id_and_mixed(aws_env: dict[str, str]) -> None:
    _, made = make_requests("us-east-1")
    first, second = made
    by_instance = status(first["InstanceId"], "--json")
    assert by_instance.returncode == 0, by_instance.stderr
    assert [f["request_id"] for f in json.loads(by_instance.stdout)] == [
        first["SpotInstanceRequestId"]]

    mixed = status(second["SpotInstanceRequestId"], first["InstanceId"], "--json")
    assert mixed.returncode == 0, mixed.stderr
    assert sorted(f["request_id"] for f in json.loads(mixed.stdout)) == sorted(
        m["SpotInstanceRequestId"] for m in made)

    unknown = status(first["InstanceId"], "i-0fedcba9876543210")
    assert unknown.returncode == 3
    assert unknown.stderr == ("spotwatch status: error: unknown ID i-0fedcba9876543210: "
                              "no spot request for it in us-east-1\n")
    assert rows(unknown.stdout)[0][0] == first["SpotInstanceRequestId"]


@pytest.mark.slow
def test_all_lists_every_request_in_the_region(aws_env: dict[str, str]) -> None:
    region = "ca-central-1"  # no other test makes spot requests here
    _, made = make_requests(region, count=3)
    done = status("--region", region, "--json")
    listed = {f["request_id"] for f in json.loads(done.stdout)}
    from moto.backends import get_backend

    assert listed == set(get_backend("ec2")[ACCOUNT][region].spot_instance_requests)
    assert {m["SpotInstanceRequestId"] for m in made} <= listed


@pytest.mark.slow
def test_marked_for_termination_exits_1_and_comes_first(aws_env: dict[str, str]) -> None:
    value, made = make_requests("us-east-1")
    marked = made[1]["SpotInstanceRequestId"]
    set_code("us-east-1", marked, "marked-for-termination",
             "Spot Instance is marked for termination.")
    done = status("--tag", f"{TAG}={value}")
    assert done.returncode == 1, done.stderr
    first_row = done.stdout.splitlines()[1]
    assert first_row.startswith(f"{marked}  {made[1]['InstanceId']}  active  "
                                "marked-for-termination  ")
    assert "interrupting: AWS terminates it within 2 min" in first_row
    assert first_row.endswith("Spot Instance is marked for termination.")
    assert done.stdout.splitlines()[-1] == "2 requests: 1 interrupting, 1 healthy"


@pytest.mark.slow
def test_a_capacity_reclaim_is_under_way_until_the_instance_stops(
    aws_env: dict[str, str]
) -> None:
    value, made = make_requests("us-east-1", count=1)
    (request,) = made
    set_code("us-east-1", request["SpotInstanceRequestId"], "instance-terminated-no-capacity")
    running = status("--tag", f"{TAG}={value}", "--json")
    assert running.returncode == 1, running.stderr
    assert json.loads(running.stdout)[0]["instance_state"] == "running"

    boto3.client("ec2", region_name="us-east-1").terminate_instances(
        InstanceIds=[request["InstanceId"]])
    gone = status("--tag", f"{TAG}={value}", "--json")
    assert gone.returncode == 2, gone.stderr
    (found,) = json.loads(gone.stdout)
    assert (found["instance_state"], found["class"]) == ("terminated", "interrupted")


@pytest.mark.slow
def test_unknown_id_exits_3_naming_it_but_shows_the_rest(aws_env: dict[str, str]) -> None:
    _, made = make_requests("us-east-1", count=1)
    done = status(made[0]["SpotInstanceRequestId"], "sir-0badc0de")
    assert done.returncode == 3
    assert done.stderr == ("spotwatch status: error: unknown ID sir-0badc0de: "
                           "no spot request for it in us-east-1\n")
    assert rows(done.stdout)[0][0] == made[0]["SpotInstanceRequestId"]


@pytest.mark.slow
def test_all_regions_finds_requests_where_they_are(aws_env: dict[str, str]) -> None:
    value, made = make_requests("eu-west-3", count=1)
    done = status("--all-regions", "--tag", f"{TAG}={value}", timeout=110)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("REGION     REQUEST")
    assert rows(done.stdout) and rows(done.stdout)[0][:2] == [
        "eu-west-3", made[0]["SpotInstanceRequestId"]]


def _lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))


def _wait_for(lines: queue.Queue[str], wanted: str, seen: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if wanted in line:
            return line
    raise AssertionError(f"no line with {wanted!r} in {timeout}s; saw {seen}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_watch_prints_a_line_per_change_and_sigint_ends_it(aws_env: dict[str, str]) -> None:
    value, made = make_requests("us-east-1", count=1)
    request_id = made[0]["SpotInstanceRequestId"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotwatch", "status", "--tag", f"{TAG}={value}", "--watch", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        seen: list[str] = []
        _wait_for(lines, "1 request: 1 healthy", seen, 60)
        set_code("us-east-1", request_id, "marked-for-termination")
        change = _wait_for(lines, "fulfilled -> marked-for-termination", seen, 60)
        assert f"  {request_id}  {made[0]['InstanceId']}  " in change
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 1  # the last poll saw an interruption under way
        assert proc.stderr is not None
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
