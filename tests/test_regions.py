"""One region order for every --region command, and advice that names what it reads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spotwatch import regions
from spotwatch.cli import main
from spotwatch.imdssim import ImdsSimulator
from spotwatch.regions import Region, instance_region, resolve
from tests.helpers import free_port

ALL = {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-2"}


def never() -> str | None:
    raise AssertionError("asked although an earlier step answered")


@pytest.mark.parametrize(("flag", "env", "profile", "instance", "expected"), [
    ("ap-south-1", ALL, "eu-west-3", "us-west-2", Region("ap-south-1", "--region")),
    (None, ALL, "eu-west-3", "us-west-2", Region("eu-west-1", "AWS_REGION")),
    ("", {"AWS_DEFAULT_REGION": "eu-west-2"}, "eu-west-3", "us-west-2",
     Region("eu-west-2", "AWS_DEFAULT_REGION")),
    (None, {"AWS_REGION": " ", "AWS_DEFAULT_REGION": ""}, "eu-west-3", "us-west-2",
     Region("eu-west-3", "profile")),
    (None, {}, None, "us-west-2", Region("us-west-2", "IMDS")),
    (None, {}, "", None, None),
])
def test_the_order(flag: str | None, env: dict[str, str], profile: str | None,
                   instance: str | None, expected: Region | None) -> None:
    assert resolve(flag, env, lambda: profile, lambda: instance) == expected


def test_later_steps_are_not_asked_once_one_answers() -> None:
    assert resolve(None, {"AWS_REGION": "eu-west-1"}, never, never) == Region(
        "eu-west-1", "AWS_REGION")
    assert resolve(None, {}, lambda: "eu-west-3", never) == Region("eu-west-3", "profile")


def test_the_advice_names_both_variables_and_the_flag() -> None:
    line = regions.no_region()
    assert line.startswith("no AWS region: pass --region")
    assert "AWS_REGION" in line and "AWS_DEFAULT_REGION" in line and "profile" in line


# -- the instance step ------------------------------------------------------------------


def test_instance_region_from_the_identity_document() -> None:
    with ImdsSimulator(require_token=True) as sim:
        sim.set_identity(region="ap-northeast-2")
        assert instance_region({"SPOTWATCH_IMDS_URL": sim.url}) == "ap-northeast-2"


def test_instance_region_honours_botocores_switch() -> None:
    env = {"SPOTWATCH_IMDS_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true"}
    assert instance_region(env) is None


def test_nothing_listening_gives_none_quickly() -> None:
    started = time.monotonic()
    url = f"http://127.0.0.1:{free_port()}"
    assert instance_region({"SPOTWATCH_IMDS_URL": url}, budget=1.0) is None
    assert time.monotonic() - started < 10  # bounded by the budget, with slack for load


def test_off_ec2_the_network_is_not_asked(tmp_path: Path) -> None:
    (tmp_path / "sys_vendor").write_text("QEMU\n")
    assert instance_region({}, dmi_dir=tmp_path) is None


# -- the commands -------------------------------------------------------------------------


@pytest.fixture
def no_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No region anywhere: no variables, an empty config file, IMDS switched off."""
    import os

    for key in list(os.environ):
        if key.startswith("AWS_") or key == "SPOTWATCH_IMDS_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / "aws-config"
    config.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return config


def test_fleet_setup_without_a_region_is_a_usage_error(
        no_aws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "setup", "--queue-name", "q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spotwatch fleet setup: error: no AWS region for the queue and rule: "
                          "pass --region, or set AWS_REGION or AWS_DEFAULT_REGION")
    assert err.count("\n") == 1


def test_fleet_watch_without_a_region_is_a_usage_error(
        no_aws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A queue URL that names no region (a custom endpoint) leaves the other steps.
    assert main(["fleet", "watch", "--queue-url", "http://127.0.0.1:9/123456789012/q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spotwatch fleet watch: error: no AWS region for the queue: "
                          "pass --region, or set AWS_REGION or AWS_DEFAULT_REGION")


@pytest.mark.parametrize(("env", "profile", "expected"), [
    ({"AWS_REGION": "eu-west-1"}, "", "eu-west-1"),  # botocore alone would not see it
    ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-2"}, "", "eu-west-1"),
    ({"AWS_DEFAULT_REGION": "eu-west-2"}, "region = eu-west-3\n", "eu-west-2"),
    ({}, "region = eu-west-3\n", "eu-west-3"),
    ({}, "", None),
])
def test_status_default_region_follows_the_order(
        no_aws: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], profile: str,
        expected: str | None) -> None:
    from spotwatch.status import Boto3Clients

    no_aws.write_text("[default]\n" + profile)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Boto3Clients().default_region() == expected


def test_status_without_a_region_says_so_truly(
        no_aws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert err == f"spotwatch status: error: {regions.no_region()}\n"
