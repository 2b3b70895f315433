"""`spotwatch status` against botocore's Stubber: every class of code, pagination, errors.

The real botocore client and paginator run; only the HTTP exchange is replaced
by canned, shape-validated responses.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest

from spotwatch.spot_codes import EXIT_API, EXIT_INTERRUPTED, EXIT_INTERRUPTING, EXIT_OK
from spotwatch.status import (
    Output,
    StatusApiError,
    StatusQuery,
    fetch,
    request_filters,
    run_status,
)
from tests.status_helpers import StubClients, item, page

NOW = datetime(2026, 11, 26, 3, 2, 25, tzinfo=timezone.utc)


def run(query: StatusQuery, clients: StubClients, *, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_status(query, as_json=as_json, clients=clients,
                        output=Output(out, err, now=lambda: NOW))
    clients.verify()
    return status, out.getvalue(), err.getvalue()


# code, instance state from DescribeInstances (None: not asked), exit status, meaning
CASES = [
    ("marked-for-termination", None, EXIT_INTERRUPTING,
     "interrupting: AWS terminates it within 2 min"),
    ("marked-for-stop", None, EXIT_INTERRUPTING, "interrupting: AWS stops it within 2 min"),
    ("instance-terminated-no-capacity", "running", EXIT_INTERRUPTING,
     "interrupting: capacity reclaimed, ends within 2 min"),
    ("instance-terminated-no-capacity", "terminated", EXIT_INTERRUPTED,
     "interrupted: capacity reclaimed; terminated"),
    ("instance-terminated-by-price", None, EXIT_INTERRUPTED,
     "interrupted: price over your max; terminated"),
    ("instance-stopped-no-capacity", None, EXIT_INTERRUPTED,
     "interrupted: capacity reclaimed; stopped"),
    ("bad-parameters", None, EXIT_INTERRUPTED, "failed: invalid request parameters"),
    ("limit-exceeded", None, EXIT_INTERRUPTED, "failed: a Spot Instance or vCPU limit was reached"),
    ("pending-fulfillment", None, EXIT_OK, "waiting: AWS is launching the instance"),
    ("placement-group-constraint", None, EXIT_OK, "waiting: no room in the placement group yet"),
    ("fulfilled", None, EXIT_OK, "healthy: running"),
    ("request-canceled-and-instance-running", None, EXIT_OK,
     "healthy: request canceled, instance runs on"),
    ("instance-terminated-by-user", None, EXIT_OK, "ended: you terminated the instance"),
    ("spot-request-teleported", None, EXIT_API, "unknown code: read the message"),
]


@pytest.mark.parametrize(("code", "instance_state", "status", "meaning"), CASES)
def test_each_class_of_code_gives_its_exit_status_and_meaning(
    code: str, instance_state: str | None, status: int, meaning: str
) -> None:
    clients = StubClients()
    stub = clients.stub()
    stub.add_response(
        "describe_spot_instance_requests",
        page(item("sir-abcd1234", code, message="as AWS said it")),
        {"MaxResults": 1000},
    )
    if instance_state is not None:
        stub.add_response(
            "describe_instances",
            {"Reservations": [{"Instances": [{"InstanceId": "i-0123456789abcdef0",
                                              "State": {"Code": 16, "Name": instance_state}}]}]},
            {"Filters": [{"Name": "instance-id", "Values": ["i-0123456789abcdef0"]}],
             "MaxResults": 1000},
        )
    got, out, err = run(StatusQuery(), clients)
    assert got == status
    assert err == ""
    row = out.splitlines()[1]
    assert row.startswith(f"sir-abcd1234  i-0123456789abcdef0  active  {code}  ")
    assert "2026-11-26 03:00:25Z (2m ago)" in row
    assert meaning in row
    assert row.endswith("as AWS said it")


def test_the_same_through_json() -> None:
    clients = StubClients()
    clients.stub().add_response("describe_spot_instance_requests", page(
        item("sir-1", "fulfilled"), item("sir-2", "marked-for-stop-by-experiment"),
        item("sir-3", "pending-evaluation", instance=None, state="open"),
    ), {"MaxResults": 1000})
    status, out, _ = run(StatusQuery(), clients, as_json=True)
    data = json.loads(out)
    assert status == EXIT_INTERRUPTING
    assert [(d["request_id"], d["class"]) for d in data] == [
        ("sir-2", "interrupting"), ("sir-3", "waiting"), ("sir-1", "healthy"),
    ]
    assert data[1]["instance_id"] is None
    assert data[0]["updated"] == "2026-11-26T03:00:25Z"


def test_a_reclaimed_instance_ec2_no_longer_knows_is_gone_and_interrupted() -> None:
    clients = StubClients()
    stub = clients.stub()
    stub.add_response("describe_spot_instance_requests",
                      page(item("sir-1", "instance-terminated-no-capacity")), {"MaxResults": 1000})
    stub.add_response("describe_instances", {"Reservations": []}, None)
    status, out, _ = run(StatusQuery(), clients, as_json=True)
    assert status == EXIT_INTERRUPTED
    assert json.loads(out)[0]["instance_state"] == "gone"


def test_pagination_follows_next_token() -> None:
    clients = StubClients()
    stub = clients.stub()
    filters = [{"Name": "tag:team", "Values": ["batch"]}]
    stub.add_response("describe_spot_instance_requests",
                      page(item("sir-page1", "fulfilled"), token="token-1"),
                      {"Filters": filters, "MaxResults": 1000})
    stub.add_response("describe_spot_instance_requests",
                      page(item("sir-page2", "marked-for-termination", instance="i-12345678")),
                      {"Filters": filters, "MaxResults": 1000, "NextToken": "token-1"})
    status, out, _ = run(StatusQuery(tags=(("team", "batch"),)), clients)
    assert status == EXIT_INTERRUPTING
    lines = out.splitlines()
    assert lines[1].startswith("sir-page2  i-12345678")
    assert lines[2].startswith("sir-page1")
    assert lines[3] == "2 requests: 1 interrupting, 1 healthy"


def test_mixed_ids_and_filters_become_server_side_filters() -> None:
    query = StatusQuery(
        ids=("i-0123456789abcdef0", "sir-abc", "i-12345678", "sir-abc"),
        tags=(("team", "batch"), ("team", "web"), ("owner", None)),
        states=("active", "open"),
    )
    base = [
        {"Name": "tag:team", "Values": ["batch", "web"]},
        {"Name": "tag-key", "Values": ["owner"]},
        {"Name": "state", "Values": ["active", "open"]},
    ]
    assert request_filters(query) == [
        [*base, {"Name": "spot-instance-request-id", "Values": ["sir-abc"]}],
        [*base, {"Name": "instance-id", "Values": ["i-0123456789abcdef0", "i-12345678"]}],
    ]
    assert request_filters(StatusQuery()) == [[]]
    many = StatusQuery(ids=tuple(f"i-{n:08x}" for n in range(250)))
    assert [len(f[0]["Values"]) for f in request_filters(many)] == [100, 100, 50]


def test_ids_found_by_instance_and_by_request_and_one_unknown() -> None:
    clients = StubClients()
    stub = clients.stub()
    stub.add_response("describe_spot_instance_requests", page(item("sir-1", "fulfilled")),
                      {"Filters": [{"Name": "spot-instance-request-id",
                                    "Values": ["sir-1", "sir-404"]}], "MaxResults": 1000})
    stub.add_response("describe_spot_instance_requests",
                      page(item("sir-2", "fulfilled", instance="i-12345678")),
                      {"Filters": [{"Name": "instance-id", "Values": ["i-12345678"]}],
                       "MaxResults": 1000})
    status, out, err = run(StatusQuery(ids=("sir-1", "i-12345678", "sir-404")), clients)
    assert status == EXIT_API
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["sir-1", "sir-2"]
    assert err == ("spotwatch status: error: unknown ID sir-404: "
                   "no spot request for it in us-east-1\n")


def test_an_unknown_id_does_not_hide_an_interruption() -> None:
    clients = StubClients()
    clients.stub().add_response("describe_spot_instance_requests",
                                page(item("sir-1", "marked-for-termination")), None)
    status, out, err = run(StatusQuery(ids=("sir-1", "sir-typo")), clients)
    assert status == EXIT_INTERRUPTING
    assert out.splitlines()[1].startswith("sir-1 ")
    assert "unknown ID sir-typo" in err


def test_all_regions_asks_each_enabled_region() -> None:
    clients = StubClients()
    clients.stub("us-east-1").add_response("describe_regions", {"Regions": [
        {"RegionName": "us-east-1", "OptInStatus": "opt-in-not-required"},
        {"RegionName": "eu-west-1", "OptInStatus": "opt-in-not-required"},
        {"RegionName": "af-south-1", "OptInStatus": "not-opted-in"},
    ]}, {})
    clients.stub("eu-west-1").add_response(
        "describe_spot_instance_requests", page(item("sir-eu", "marked-for-stop")), None)
    clients.stub("us-east-1").add_response(
        "describe_spot_instance_requests", page(item("sir-us", "fulfilled")), None)
    status, out, _ = run(StatusQuery(all_regions=True), clients)
    assert status == EXIT_INTERRUPTING
    lines = out.splitlines()
    assert lines[0].startswith("REGION     REQUEST")
    assert lines[1].startswith("eu-west-1  sir-eu")
    assert lines[2].startswith("us-east-1  sir-us")
    assert "af-south-1" not in clients.stubs


def test_no_requests_says_so_and_is_healthy() -> None:
    clients = StubClients()
    clients.stub().add_response("describe_spot_instance_requests", page(), None)
    assert run(StatusQuery(), clients)[:2] == (EXIT_OK, "no spot requests found in us-east-1\n")


@pytest.mark.parametrize(("operation", "code", "status", "expected"), [
    ("describe_spot_instance_requests", "UnauthorizedOperation", 403,
     "access denied: the caller lacks permission ec2:DescribeSpotInstanceRequests "
     "in us-east-1 (UnauthorizedOperation)"),
    ("describe_instances", "UnauthorizedOperation", 403,
     "access denied: the caller lacks permission ec2:DescribeInstances "
     "in us-east-1 (UnauthorizedOperation)"),
    ("describe_spot_instance_requests", "RequestLimitExceeded", 503,
     "EC2 throttled DescribeSpotInstanceRequests in us-east-1 even after retries "
     "(RequestLimitExceeded): try again later or poll less often"),
    ("describe_spot_instance_requests", "InvalidSpotInstanceRequestID.NotFound", 400,
     "unknown ID in us-east-1: The spot instance request ID 'sir-404' does not exist "
     "(InvalidSpotInstanceRequestID.NotFound)"),
    ("describe_spot_instance_requests", "AuthFailure", 401,
     "AWS rejected the credentials in us-east-1 (AuthFailure): "
     "check AWS_PROFILE or run aws configure"),
    ("describe_spot_instance_requests", "ExpiredToken", 400,
     "the AWS credentials have expired (ExpiredToken): refresh them (aws sso login, ...)"),
    ("describe_spot_instance_requests", "InternalError", 500,
     "EC2 DescribeSpotInstanceRequests failed in us-east-1 (InternalError): "
     "The spot instance request ID 'sir-404' does not exist"),
])
def test_api_errors_become_one_line_and_exit_3(
    operation: str, code: str, status: int, expected: str
) -> None:
    clients = StubClients()
    stub = clients.stub()
    if operation == "describe_instances":
        stub.add_response("describe_spot_instance_requests",
                          page(item("sir-1", "instance-terminated-no-capacity")), None)
    stub.add_client_error(operation, service_error_code=code, http_status_code=status,
                          service_message="The spot instance request ID 'sir-404'\ndoes not exist")
    with pytest.raises(StatusApiError) as caught:
        fetch(StatusQuery(), clients)
    assert str(caught.value) == expected
    assert caught.value.exit_code == EXIT_API


def test_no_default_region_is_an_error_naming_the_fix() -> None:
    with pytest.raises(StatusApiError, match="no AWS region: pass --region"):
        fetch(StatusQuery(), StubClients(default=None))
