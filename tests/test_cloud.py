"""--cloud auto: DMI first, then one probe per metadata service."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotwatch.clouds import detect
from spotwatch.clouds.azure import AZURE_ASSET_TAG
from spotwatch.imdssim import ImdsSimulator
from spotwatch.imdssim_azure import AzureSimulator
from spotwatch.imdssim_gcp import GceSimulator


def _dmi(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sys_vendor": "Amazon EC2"}, "aws"),
        ({"sys_vendor": "Xen", "bios_version": "4.11.amazon"}, "aws"),
        ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, "gcp"),
        (
            {"sys_vendor": "Microsoft Corporation", "chassis_asset_tag": AZURE_ASSET_TAG},
            "azure",
        ),
        ({"sys_vendor": "Microsoft Corporation", "chassis_asset_tag": "none"}, None),
        ({"sys_vendor": "QEMU"}, None),
        ({}, None),
    ],
)
def test_from_dmi(tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    found = detect.from_dmi(_dmi(tmp_path, **files))
    assert (found.cloud if found else None) == expected


def test_dmi_decides_without_the_network(tmp_path: Path) -> None:
    def never(url: str) -> str | None:
        raise AssertionError("probed despite DMI")

    decision = detect.decide(
        "auto", "http://127.0.0.1:9", dmi_dir=_dmi(tmp_path, sys_vendor="Google"),
        probes=[("gcp", never)],
    )  # fmt: skip
    assert (decision.cloud, decision.how) == ("gcp", "dmi")


def test_flag_wins(tmp_path: Path) -> None:
    decision = detect.decide("azure", "x", dmi_dir=_dmi(tmp_path, sys_vendor="Amazon EC2"))
    assert (decision.cloud, decision.how) == ("azure", "flag")


@pytest.mark.parametrize("which", ["aws", "gcp", "azure"])
def test_probe_finds_each_simulator(tmp_path: Path, which: str) -> None:
    sims = {"aws": ImdsSimulator, "gcp": GceSimulator, "azure": AzureSimulator}
    with sims[which]() as sim:
        url = sim.url
        decision = detect.decide("auto", url, dmi_dir=tmp_path)
    assert (decision.cloud, decision.how) == (which, "probe")
    assert url in decision.reason


def test_nothing_answers_means_aws_by_default(tmp_path: Path) -> None:
    decision = detect.decide("auto", "http://127.0.0.1:9", dmi_dir=tmp_path)
    assert (decision.cloud, decision.how) == ("aws", "default")
    assert "--cloud" in decision.reason


# -- settings ------------------------------------------------------------------------


def test_cloud_settings_from_flags_and_environment() -> None:
    from spotwatch.config import resolve

    assert resolve({}, {}).cloud == "auto"
    assert resolve({"--cloud": "GCP"}, {}).cloud == "gcp"
    assert resolve({}, {"SPOTWATCH_CLOUD": "azure"}).cloud == "azure"
    assert resolve({"--no-approve": "1"}, {}).no_approve
    assert not resolve({}, {}).interval_given
    assert resolve({"--interval": "5"}, {}).interval_given


def test_unknown_cloud_is_a_usage_error() -> None:
    from spotwatch.config import resolve
    from spotwatch.errors import UsageError

    with pytest.raises(UsageError, match="SPOTWATCH_CLOUD: expected one of auto, aws, gcp, azure"):
        resolve({}, {"SPOTWATCH_CLOUD": "oracle"})


def test_azure_polls_every_second_unless_told() -> None:
    from spotwatch.clouds import registry

    assert registry.get("azure").interval(5.0, given=False) == 1.0
    assert registry.get("azure").interval(5.0, given=True) == 5.0
    assert registry.get("gcp").interval(5.0, given=False) == 5.0
