"""The cloud registry: every adapter is complete, and each builds only its own cloud's parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotwatch.clouds import registry
from spotwatch.clouds.base import Cloud
from spotwatch.config import CLOUDS, WATCH_SOURCES, RunConfig
from spotwatch.drill import EVENTS
from spotwatch.stopper import Stopper


@pytest.mark.parametrize("name", registry.NAMES)
def test_each_adapter_is_the_cloud_it_is_listed_as(name: str) -> None:
    adapter = registry.get(name)
    assert isinstance(adapter, Cloud) and adapter.name == name and adapter.title
    assert set(adapter.sources) <= set(WATCH_SOURCES)
    assert "shutdown" in adapter.sources and "spot" in adapter.sources
    assert set(adapter.drill_events) <= set(EVENTS)
    assert registry.get(name) is adapter  # one adapter per cloud, imported once


@pytest.mark.parametrize("name", registry.NAMES)
def test_each_drill_event_is_seen_by_a_source_of_its_cloud(name: str) -> None:
    adapter = registry.get(name)
    for event in adapter.drill_events:
        assert adapter.drill_source(event) in adapter.sources, event
    if name == "gcp":
        assert adapter.drill_source("upcoming-maintenance") == "maintenance"


def test_the_drills_event_flag_offers_every_event() -> None:
    import argparse

    from spotwatch.cli import build_parser

    (subs,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (event,) = [a for a in subs.choices["drill"]._actions if "--event" in a.option_strings]
    assert tuple(event.choices or ()) == EVENTS
    every = {e for name in registry.NAMES for e in registry.get(name).drill_events}
    assert every == set(EVENTS)


def test_the_cloud_flag_offers_exactly_the_registered_clouds() -> None:
    assert ("auto", *registry.NAMES) == CLOUDS
    with pytest.raises(KeyError):
        registry.get("oracle")


def test_the_probes_ask_aws_last() -> None:
    from spotwatch.clouds.detect import ranked_probes

    assert [name for name, _ in ranked_probes()][-1] == "aws"


def _config(url: str, cloud: str, tmp_path: Path, watch: tuple[str, ...]) -> RunConfig:
    return RunConfig(
        imds_url=url, hooks_dir=tmp_path, state_dir=tmp_path, cloud=cloud, watch=watch
    )


@pytest.mark.slow
@pytest.mark.parametrize("cloud", ["gcp", "azure"])
def test_google_and_azure_build_no_imds_client(
    cloud: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spotwatch.imds
    from spotwatch.imdssim_azure import AzureSimulator
    from spotwatch.imdssim_gcp import GceSimulator

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an AWS IMDS client was built off AWS")

    monkeypatch.setattr(spotwatch.imds, "ImdsClient", refuse)
    sim = GceSimulator() if cloud == "gcp" else AzureSimulator()
    with sim, Stopper() as stop:
        adapter = registry.get(cloud)
        config = _config(sim.url, cloud, tmp_path, ("spot", "maintenance"))
        built = adapter.build(config, interval=1.0, stop=stop)
        try:
            names = [m.name for m in built.monitors]
            # Google's maintenance source also reads instance/upcoming-maintenance.
            extra = ["upcoming-maintenance"] if cloud == "gcp" else []
            assert names == ["spot-interruption", "scheduled-maintenance", *extra]
            assert built.read_identity().instance_id
            assert [type(f).__name__ for f in built.followups] == (
                ["Approver"] if cloud == "azure" else []
            )
        finally:
            built.close()


@pytest.mark.slow
def test_aws_builds_one_monitor_per_watched_source(tmp_path: Path) -> None:
    from spotwatch.imdssim import ImdsSimulator

    with ImdsSimulator() as sim, Stopper() as stop:
        config = _config(sim.url, "aws", tmp_path, ("spot", "rebalance", "maintenance", "asg"))
        built = registry.get("aws").build(config, interval=5.0, stop=stop)
        assert [m.name for m in built.monitors] == [
            "spot-interruption",
            "rebalance-recommendation",
            "scheduled-maintenance",
            "asg-termination",
        ]
        assert built.read_identity().instance_id == "i-0123456789abcdef0"
        assert built.followups == []  # no --asg-lifecycle-hook
        with built.poll_scope():
            assert built.monitors[0].check() is None
