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
