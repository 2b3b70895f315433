from __future__ import annotations

from pathlib import Path

import pytest

from spotwatch.config import RunConfig, env_name, resolve
from spotwatch.errors import UsageError

NONE = {}


def test_defaults_match_the_spec() -> None:
    cfg = resolve(NONE, {})
    assert cfg == RunConfig()
    assert cfg.imds_url == "http://169.254.169.254"
    assert cfg.interval == 5.0
    assert cfg.hooks_dir == Path("/etc/spotwatch/hooks.d")
    assert cfg.state_dir == Path("/var/lib/spotwatch")
    assert cfg.on_rebalance is False


def test_env_names() -> None:
    assert env_name("--imds-url") == "SPOTWATCH_IMDS_URL"
    assert env_name("--deadline-margin") == "SPOTWATCH_DEADLINE_MARGIN"


def test_environment_is_read_and_the_command_line_wins() -> None:
    env = {
        "SPOTWATCH_IMDS_URL": "http://127.0.0.1:9/",
        "SPOTWATCH_INTERVAL": "2.5",
        "SPOTWATCH_ON_REBALANCE": "yes",
        "SPOTWATCH_LOG_FORMAT": "JSON",
        "SPOTWATCH_HOOK_TIMEOUT": "30",
    }
    cfg = resolve({"--interval": "1"}, env)
    assert cfg.imds_url == "http://127.0.0.1:9"
    assert cfg.interval == 1.0
    assert cfg.on_rebalance is True
    assert cfg.log_format == "json"
    assert cfg.hook_timeout == 30.0


@pytest.mark.parametrize(
    ("flags", "env", "names"),
    [
        ({"--interval": "0"}, {}, "--interval"),
        ({"--interval": "-1"}, {}, "--interval"),
        ({"--interval": "nan"}, {}, "--interval"),
        ({"--interval": "soon"}, {}, "--interval"),
        ({}, {"SPOTWATCH_INTERVAL": "0"}, "SPOTWATCH_INTERVAL"),
        ({"--imds-url": "169.254.169.254"}, {}, "--imds-url"),
        ({"--log-level": "loud"}, {}, "--log-level"),
        ({}, {"SPOTWATCH_ON_REBALANCE": "maybe"}, "SPOTWATCH_ON_REBALANCE"),
    ],
)
def test_bad_values_name_their_source(flags: dict, env: dict, names: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve(flags, env)
    assert str(err.value).startswith(names + ":")
    assert err.value.exit_code == 2


def test_margin_may_be_zero_but_timeout_may_not() -> None:
    assert resolve({"--deadline-margin": "0"}, {}).deadline_margin == 0.0
    with pytest.raises(UsageError):
        resolve({"--hook-timeout": "0"}, {})


def test_watch_list_and_on_rebalance() -> None:
    # shutdown is on by default; leaving it out of --watch turns it off.
    assert resolve(NONE, {}).sources == ("spot", "shutdown")
    assert resolve({"--watch": "spot,shutdown"}, {}).sources == ("spot", "shutdown")
    cfg = resolve({"--watch": "asg, Maintenance,spot"}, {})
    assert cfg.watch == ("spot", "maintenance", "asg")
    assert cfg.sources == ("spot", "maintenance", "asg")
    assert resolve({"--watch": "asg", "--on-rebalance": "1"}, {}).sources == ("rebalance", "asg")
    assert resolve(NONE, {"SPOTWATCH_WATCH": "spot,rebalance"}).sources == ("spot", "rebalance")
    assert resolve({"--watch": "spot"}, {"SPOTWATCH_WATCH": "asg"}).sources == ("spot",)


@pytest.mark.parametrize("text", ["spot,gcp", "", " , ", "spotty"])
def test_unknown_watch_source_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve({"--watch": text}, {})
    assert str(err.value).startswith("--watch:")
    assert err.value.exit_code == 2


def test_asg_and_maintenance_settings() -> None:
    cfg = resolve(NONE, {})
    assert (cfg.asg_deadline, cfg.maintenance_lead) == (300.0, 300.0)
    assert cfg.asg_lifecycle_hook is None and cfg.asg_name is None
    cfg = resolve(
        {"--asg-lifecycle-hook": "drain", "--asg-deadline": "90", "--watch": "asg"},
        {"SPOTWATCH_ASG_NAME": "web", "SPOTWATCH_MAINTENANCE_LEAD": "60"},
    )
    assert (cfg.asg_lifecycle_hook, cfg.asg_name) == ("drain", "web")
    assert (cfg.asg_deadline, cfg.maintenance_lead) == (90.0, 60.0)


def test_maintenance_lead_must_exceed_the_margin() -> None:
    flags = {"--watch": "maintenance", "--maintenance-lead": "5", "--deadline-margin": "5"}
    with pytest.raises(UsageError) as err:
        resolve(flags, {})
    assert "--maintenance-lead" in str(err.value) and err.value.exit_code == 2
    assert resolve({**flags, "--deadline-margin": "1"}, {}).maintenance_lead == 5.0
    # Not watched: the lead does not matter.
    assert resolve({**flags, "--watch": "spot"}, {}).deadline_margin == 5.0


def test_a_lifecycle_hook_without_the_asg_source_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as err:
        resolve({"--asg-lifecycle-hook": "drain"}, {})
    assert "add asg to --watch" in str(err.value) and err.value.exit_code == 2
