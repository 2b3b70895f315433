"""botocore Stubber stand-ins for the `spotwatch status` tests (test_status_stubber,
test_status_watch): a ``Clients`` seam with a stubbed EC2 client per region, and
DescribeSpotInstanceRequests items and pages. No tests here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import botocore.session
from botocore.stub import Stubber

UPDATED = datetime(2026, 11, 26, 3, 0, 25, tzinfo=timezone.utc)
_SESSION = botocore.session.get_session()  # one session: the EC2 model loads once


class StubClients:
    """The ``Clients`` seam with a stubbed botocore EC2 client per region."""

    def __init__(self, default: str | None = "us-east-1") -> None:
        self._default = default
        self.clients: dict[str, Any] = {}
        self.stubs: dict[str, Stubber] = {}

    def stub(self, region: str = "us-east-1") -> Stubber:
        if region not in self.stubs:
            client = _SESSION.create_client(
                "ec2", region_name=region, aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            self.clients[region] = client
            self.stubs[region] = Stubber(client)
            self.stubs[region].activate()
        return self.stubs[region]

    def default_region(self) -> str | None:
        return self._default

    def ec2(self, region: str) -> Any:
        self.stub(region)
        return self.clients[region]

    def verify(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def item(rid: str, code: str, *, instance: str | None = "i-0123456789abcdef0",
         state: str = "active", message: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "SpotInstanceRequestId": rid,
        "State": state,
        "Status": {"Code": code, "Message": message, "UpdateTime": UPDATED},
    }
    if instance:
        entry["InstanceId"] = instance
    return entry


def page(*items: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"SpotInstanceRequests": list(items)}
    if token:
        response["NextToken"] = token
    return response
