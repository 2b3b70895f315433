"""Tencent Cloud CVM: a spot instance's reclaim time from instance metadata.

``GET http://metadata.tencentyun.com/latest/meta-data/spot/termination-time``
is 404 while no reclaim is scheduled (or the instance is not spot), then the
time as ``2018-08-18 12:05:33``: no zone written, and the zone is UTC+8
(Tencent's documentation). No token. Sources: docs/clouds.md.
"""

from __future__ import annotations

import re
from typing import Callable

from spotwatch.clouds.reclaim import ReclaimAdapter, ReclaimCloud
from spotwatch.monitors import parse_time as parse_rfc3339

DEFAULT_URL = "http://metadata.tencentyun.com"
TERMINATION_TIME = "/latest/meta-data/spot/termination-time"
UTC_OFFSET = "+08:00"
# Tencent documents no lead; spot reclaims elsewhere give about two minutes.
LEAD_SECONDS = 120.0

_ZONED = re.compile(r".*([Zz]|[+-]\d{2}:?\d{2})")


def parse_time(raw: str) -> float | None:
    """``2018-08-18 12:05:33`` (UTC+8) -> epoch seconds. A time that names its own
    zone (``Z``, ``+08:00``) is read in that zone. None when it does not parse."""
    text = raw.strip()
    if not text:
        return None
    if _ZONED.fullmatch(text) is None:
        text += UTC_OFFSET
    return parse_rfc3339(text)


CLOUD = ReclaimCloud(
    name="tencent",
    title="Tencent Cloud CVM",
    default_url=DEFAULT_URL,
    path=TERMINATION_TIME,
    parse_time=parse_time,
    time_format="a UTC+8 time such as 2018-08-18 12:05:33",
    lead_seconds=LEAD_SECONDS,
    identity_paths=(
        ("instance_id", "/latest/meta-data/instance-id"),
        ("instance_type", "/latest/meta-data/instance/instance-type"),
        ("region", "/latest/meta-data/placement/region"),
        ("availability_zone", "/latest/meta-data/placement/zone"),
    ),
)


class TencentCloud(ReclaimAdapter):
    """Tencent Cloud CVM: the spot instance's reclaim time (UTC+8), no token."""

    name = "tencent"
    title = "Tencent Cloud CVM"
    description = CLOUD

    def from_dmi(self, read: Callable[[str], str]) -> str | None:
        vendor, product = read("sys_vendor"), read("product_name")
        # Observed on CVM (sys_vendor "Tencent Cloud"); Tencent documents no DMI strings.
        if "tencent" in f"{vendor} {product} {read('bios_vendor')}".lower():
            return f"DMI sys_vendor {vendor!r}, product_name {product!r}"
        return None

    def probe(self, base_url: str) -> str | None:
        from spotwatch.clouds.detect import ask

        answer = ask("GET", base_url + "/latest/meta-data/instance-id", {})
        if answer is not None and answer.status == 200 and answer.body.strip().startswith(b"ins-"):
            return f"{base_url} answered an instance id beginning 'ins-' (Tencent)"
        return None


ADAPTER = TencentCloud()
