"""Which cloud this runs on: ``--cloud auto|aws|gcp|azure``.

``auto`` reads the DMI strings first (``/sys/class/dmi/id``: no network, no
wait), and only when they say nothing known asks each metadata service once, at
``--imds-url``, with a short timeout. The decision and why are logged once as
``cloud.decided``. Nothing answered at all: AWS, spotwatch's first home, and
the watcher's faults then say what is wrong with IMDS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spotwatch.clouds import metadata_http
from spotwatch.clouds.metadata_http import ImdsError

CLOUDS = ("aws", "gcp", "azure")
CHOICES = ("auto", *CLOUDS)
DMI_DIR = Path("/sys/class/dmi/id")
# Every Azure VM carries this chassis asset tag (Hyper-V elsewhere does not).
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
PROBE_TIMEOUT = (0.5, 1.0)


@dataclass(frozen=True)
class Decision:
    cloud: str
    how: str  # "flag", "dmi", "probe" or "default"
    reason: str


def _read(dmi_dir: Path, name: str) -> str:
    try:
        return (dmi_dir / name).read_text(errors="replace").strip()
    except OSError:
        return ""


def from_dmi(dmi_dir: Path) -> Decision | None:
    """The cloud the DMI strings name, or None when they name none we know."""
    vendor = _read(dmi_dir, "sys_vendor")
    product = _read(dmi_dir, "product_name")
    bios_vendor = _read(dmi_dir, "bios_vendor")
    bios_version = _read(dmi_dir, "bios_version")
    if vendor == "Amazon EC2" or bios_vendor == "Amazon EC2" or "amazon" in bios_version.lower():
        return Decision("aws", "dmi", f"DMI sys_vendor {vendor!r}, bios {bios_vendor!r}")
    if vendor == "Google" or product == "Google Compute Engine":
        return Decision("gcp", "dmi", f"DMI sys_vendor {vendor!r}, product_name {product!r}")
    if vendor == "Microsoft Corporation":
        tag = _read(dmi_dir, "chassis_asset_tag")
        if tag == AZURE_ASSET_TAG:
            return Decision("azure", "dmi", f"DMI sys_vendor {vendor!r} with Azure's asset tag")
    return None


Probe = Callable[[str], "str | None"]


def probe_gcp(base_url: str) -> str | None:
    answer = _ask("GET", base_url + "/computeMetadata/v1/", {"Metadata-Flavor": "Google"})
    if answer is not None and answer.headers.get("metadata-flavor") == "Google":
        return f"{base_url} answered with Metadata-Flavor: Google"
    return None


def probe_azure(base_url: str) -> str | None:
    url = base_url + "/metadata/instance/compute?api-version=2021-02-01"
    answer = _ask("GET", url, {"Metadata": "true"})
    if answer is not None and answer.status == 200 and b"vmId" in answer.body:
        return f"{base_url} answered the Azure compute metadata"
    return None


def probe_aws(base_url: str) -> str | None:
    answer = _ask(
        "PUT", base_url + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    if answer is not None and answer.status == 200:
        return f"{base_url} issued an IMDSv2 token"
    answer = _ask("GET", base_url + "/latest/meta-data/instance-id", {})
    if answer is not None and answer.status in (200, 401):
        return f"{base_url} answered /latest/meta-data (IMDS)"
    return None


def _ask(method: str, url: str, headers: dict[str, str]) -> metadata_http.Answer | None:
    session = metadata_http.new_session()
    try:
        return metadata_http.request(
            session, method, url, headers=headers, timeout=PROBE_TIMEOUT, what="probe",
            max_body=65536,
        )  # fmt: skip
    except ImdsError:
        return None
    finally:
        session.close()


PROBES: Sequence[tuple[str, Probe]] = (
    # Google's and Azure's answers are unmistakable; AWS's token is asked last.
    ("gcp", probe_gcp),
    ("azure", probe_azure),
    ("aws", probe_aws),
)


def decide(
    choice: str,
    base_url: str,
    *,
    dmi_dir: Path = DMI_DIR,
    probes: Sequence[tuple[str, Probe]] = PROBES,
) -> Decision:
    """The cloud for ``choice`` (``auto`` or one of CLOUDS)."""
    if choice != "auto":
        return Decision(choice, "flag", "set by --cloud / SPOTWATCH_CLOUD")
    found = from_dmi(dmi_dir)
    if found is not None:
        return found
    for cloud, probe in probes:
        why = probe(base_url)
        if why is not None:
            return Decision(cloud, "probe", f"no known DMI vendor in {dmi_dir}; {why}")
    return Decision(
        "aws",
        "default",
        f"no known DMI vendor in {dmi_dir} and no metadata service answered at {base_url}; "
        "assuming AWS (set --cloud to choose)",
    )
