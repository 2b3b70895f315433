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
        {"--asg-lifecycle-hook": "drain", "--asg-deadline": "90", "--watch": "asg,maintenance"},
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


@pytest.mark.parametrize(("flags", "env", "named"), [
    ({"--maintenance-lead": "600"}, {}, "--maintenance-lead"),
    ({"--watch": "spot"}, {"SPOTWATCH_MAINTENANCE_LEAD": "600"}, "SPOTWATCH_MAINTENANCE_LEAD"),
])
def test_a_maintenance_lead_without_the_maintenance_source_is_a_usage_error(
        flags: dict[str, str], env: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve(flags, env)
    assert str(err.value).startswith(f"{named} needs the maintenance source: add maintenance")
    assert err.value.exit_code == 2
    # With the source watched the same lead is fine; unset, the default lead says nothing.
    assert resolve({**flags, "--watch": "maintenance"}, env).maintenance_lead == 600.0
    assert resolve({"--watch": "spot"}, {}).maintenance_lead == 300.0


def test_a_lifecycle_hook_without_the_asg_source_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as err:
        resolve({"--asg-lifecycle-hook": "drain"}, {})
    assert "add asg to --watch" in str(err.value) and err.value.exit_code == 2


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--interval", "0.09"),
        ("--interval", "3600.1"),
        ("--interval", "1e10"),
        ("--interval", "0.000001"),
        ("--hook-timeout", "86401"),
        ("--deadline-margin", "3601"),
        ("--asg-deadline", "7201"),
        ("--maintenance-lead", "604801"),
        ("--hook-output-head", "100001"),
        ("--imds-url", "http://"),
        ("--imds-url", "http://[::1"),
        ("--imds-url", "http://[zz]"),
        ("--imds-url", "http://127.0.0.1:99999"),
        ("--imds-url", "http://127.0.0.1:0"),
        ("--imds-url", "http://a host"),
        ("--imds-url", "http://host/\x00"),
        ("--imds-url", "http://-bad-/"),
        ("--imds-url", "http://h/?q=1"),
    ],
)
def test_out_of_range_and_unusable_values_are_usage_errors(flag: str, value: str) -> None:
    for flags, env in (({flag: value}, {}), ({}, {env_name(flag): value})):
        with pytest.raises(UsageError) as err:
            resolve(flags, env)
        assert err.value.exit_code == 2 and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "value",
    ["http://169.254.169.254", "http://[fd00:ec2::254]", "http://127.0.0.1:1338/",
     "https://metadata.google.internal", "http://[::1]:8080/base"],
)  # fmt: skip
def test_usable_urls_pass(value: str) -> None:
    assert resolve({"--imds-url": value}, {}).imds_url == value.rstrip("/")


def test_the_range_ends_are_accepted_and_shown() -> None:
    from spotwatch.config import BY_FLAG

    assert resolve({"--interval": "0.1"}, {}).interval == 0.1
    assert resolve({"--interval": "3600"}, {}).interval == 3600.0
    assert BY_FLAG["--interval"].range_text() == "0.1 to 3600 s"
    assert BY_FLAG["--imds-url"].range_text() is None


def test_a_margin_that_leaves_no_time_for_the_shortest_lead_is_refused() -> None:
    from spotwatch.config import check_margin

    with pytest.raises(UsageError, match=r"120 s ahead"):
        resolve({"--deadline-margin": "200"}, {})  # no cloud leaves time for it
    cfg = resolve({"--deadline-margin": "50"}, {})  # fine on AWS, not on Google
    check_margin(cfg, "aws")
    with pytest.raises(UsageError, match=r"preemption on Google comes 30 s ahead"):
        check_margin(cfg, "gcp")
    with pytest.raises(UsageError, match="--asg-deadline"):
        resolve({"--deadline-margin": "40", "--watch": "spot,asg", "--asg-deadline": "30",
                 "--cloud": "aws"}, {})  # fmt: skip
    with pytest.raises(UsageError):
        resolve({"--deadline-margin": "40", "--cloud": "azure"}, {})


def test_every_setting_is_declared_once_in_the_table() -> None:
    """RunConfig has one field per row of config.SETTINGS, defaulting to the row's
    default, and every row belongs to one of the groups --help shows."""
    from dataclasses import fields

    from spotwatch import config

    table = {s.field: s.default for s in config.SETTINGS}
    declared = {f.name: f.default for f in fields(RunConfig) if f.name != "interval_given"}
    assert declared == table
    assert len(config.RUN_FLAGS) == len(set(config.RUN_FLAGS)) == len(table)
    groups = {name for name, _title in config.GROUPS}
    assert {s.group for s in config.SETTINGS} == groups


def test_run_help_shows_every_flag_once_in_its_group() -> None:
    import argparse

    from spotwatch import config
    from spotwatch.commands import run_cmd as run

    parser = argparse.ArgumentParser(prog="spotwatch")
    subparsers = parser.add_subparsers()
    run.add_parser(subparsers)
    sub = subparsers.choices["run"]
    titles = {g.title: [a.option_strings[0] for a in g._group_actions] for g in sub._action_groups}
    for name, title in config.GROUPS:
        assert titles[title] == [s.flag for s in config.SETTINGS if s.group == name]
    text = sub.format_help()
    assert "range 0.1 to 3600 s" in text and "(default /etc/spotwatch/hooks.d)" in text
