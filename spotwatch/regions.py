"""Which AWS region a command asks: one order for every subcommand that takes ``--region``.

``--region``; then ``AWS_REGION`` (what the AWS CLI v2 and most SDKs read);
then ``AWS_DEFAULT_REGION`` (what botocore reads); then the profile's
``region`` (the AWS config file, through botocore); then, on an EC2 instance,
the instance's own region from IMDS. The first that says something wins.

boto3 stays with the callers (the profile step is a callable they pass in),
and ``spotwatch run`` never imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ENV_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
IMDS_URL_ENV = "SPOTWATCH_IMDS_URL"
ADVICE = (
    "pass --region, or set AWS_REGION or AWS_DEFAULT_REGION, "
    "or a region in your AWS profile (aws configure set region R)"
)

Lookup = Callable[[], Optional[str]]


@dataclass(frozen=True)
class Region:
    name: str
    source: str  # "--region", "AWS_REGION", "AWS_DEFAULT_REGION", "profile", "IMDS"


def no_region(what: str = "no AWS region") -> str:
    """The one line to print when no step gave a region."""
    return f"{what}: {ADVICE}"


def resolve(
    flag: str | None, env: Mapping[str, str], profile: Lookup, instance: Lookup
) -> Region | None:
    """The region by the order above; ``profile`` and ``instance`` are asked only if needed."""
    if flag and flag.strip():
        return Region(flag.strip(), "--region")
    for name in ENV_VARS:
        value = env.get(name, "").strip()
        if value:
            return Region(value, name)
    for source, lookup in (("profile", profile), ("IMDS", instance)):
        value = (lookup() or "").strip()
        if value:
            return Region(value, source)
    return None


def instance_region(
    env: Mapping[str, str],
    *,
    dmi_dir: Path | None = None,
    connect_timeout: float = 0.5,
    budget: float = 2.0,
) -> str | None:
    """The region in this EC2 instance's identity document; None off EC2 or on failure.

    Asked only when ``SPOTWATCH_IMDS_URL`` names a metadata service or the DMI
    strings say EC2, so a laptop never waits on 169.254.169.254; never when
    ``AWS_EC2_METADATA_DISABLED`` is true (botocore's own switch).
    """
    if env.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true":
        return None
    from spotwatch.clouds import detect
    from spotwatch.imds import DEFAULT_BASE_URL, ImdsClient, ImdsError, read_identity

    url = env.get(IMDS_URL_ENV, "").strip()
    if not url:
        found = detect.from_dmi(dmi_dir if dmi_dir is not None else detect.DMI_DIR)
        if found is None or found.cloud != "aws":
            return None
        url = DEFAULT_BASE_URL
    try:
        client = ImdsClient(url, connect_timeout=connect_timeout, read_timeout=1.0,
                            budget=budget)
        try:
            region = read_identity(client).region
        finally:
            client.close()
    except (ImdsError, ValueError):
        return None
    return None if region in ("", "unknown") else region
