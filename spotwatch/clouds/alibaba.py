"""Alibaba Cloud ECS: a preemptible instance's reclaim time from instance metadata.

``GET http://100.100.100.200/latest/meta-data/instance/spot/termination-time``
is 404 until the instance is to be reclaimed, then a UTC time such as
``2015-01-05T18:02:00Z``, about five minutes before the release. In security
hardening mode every read needs a token from ``PUT /latest/api/token`` (header
``X-aliyun-ecs-metadata-token-ttl-seconds``), sent as
``X-aliyun-ecs-metadata-token``; spotwatch always asks for one and falls back to
plain reads when none is issued. Sources: docs/clouds.md.
"""

from __future__ import annotations

from typing import Callable

from spotwatch.clouds.reclaim import ReclaimAdapter, ReclaimCloud
from spotwatch.monitors import parse_time

DEFAULT_URL = "http://100.100.100.200"
TERMINATION_TIME = "/latest/meta-data/instance/spot/termination-time"
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aliyun-ecs-metadata-token"
LEAD_SECONDS = 300.0  # the time appears about five minutes before the release

CLOUD = ReclaimCloud(
    name="alibaba",
    title="Alibaba Cloud ECS",
    default_url=DEFAULT_URL,
    path=TERMINATION_TIME,
    parse_time=parse_time,
    time_format="a UTC time such as 2015-01-05T18:02:00Z",
    lead_seconds=LEAD_SECONDS,
    identity_paths=(
        ("instance_id", "/latest/meta-data/instance-id"),
        ("instance_type", "/latest/meta-data/instance/instance-type"),
        ("region", "/latest/meta-data/region-id"),
        ("availability_zone", "/latest/meta-data/zone-id"),
        ("account_id", "/latest/meta-data/owner-account-id"),
    ),
    token_path=TOKEN_PATH,
    token_ttl_header=TOKEN_TTL_HEADER,
    token_header=TOKEN_HEADER,
)


class AlibabaCloud(ReclaimAdapter):
    """Alibaba Cloud ECS: the preemptible instance's reclaim time, read with a token."""

    name = "alibaba"
    title = "Alibaba Cloud ECS"
    description = CLOUD

    def from_dmi(self, read: Callable[[str], str]) -> str | None:
        vendor, product = read("sys_vendor"), read("product_name")
        if vendor == "Alibaba Cloud" or product == "Alibaba Cloud ECS":
            return f"DMI sys_vendor {vendor!r}, product_name {product!r}"
        return None

    def probe(self, base_url: str) -> str | None:
        from spotwatch.clouds.detect import ask

        # AWS has no region-id path (404); Alibaba answers it (in normal mode).
        answer = ask("GET", base_url + "/latest/meta-data/region-id", {})
        if answer is not None and answer.status == 200 and answer.body.strip():
            return f"{base_url} answered /latest/meta-data/region-id (Alibaba)"
        return None


ADAPTER = AlibabaCloud()
