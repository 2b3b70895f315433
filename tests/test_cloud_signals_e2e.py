"""``spotwatch run`` end to end with the newer platform signals (simulated):
Azure Scheduled Events 2024-07-09 (``SpotRebalanceRecommendation``) and its fallback
to 2020-07-01, and Google's ``instance/upcoming-maintenance``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spotwatch.imdssim_azure import EVENTS_PATH, AzureSimulator
from spotwatch.imdssim_gcp import (
    BASE_PATH,
    MAINTENANCE_EVENT,
    UPCOMING,
    GceSimulator,
    upcoming_doc,
)
from spotwatch.monitors import parse_time
from tests.helpers import (
    Daemon,
    Daemons,
    ends,
    holds_for,
    hook_env,
    recording_hook,
    starts,
    wait_until,
)
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture

pytestmark = pytest.mark.slow


def _versions(sim: AzureSimulator, method: str = "GET") -> list[str]:
    return [r.query.get("api-version", "") for r in sim.requests(EVENTS_PATH, method)]


# -- Azure -------------------------------------------------------------------------------


def test_azure_2024_rebalance_for_this_vm_runs_hooks_and_another_vms_is_ignored(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with AzureSimulator() as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "azure", "--watch", "spot,rebalance")
        daemon.wait_for_event("azure.events_started")
        sim.add_event("SpotRebalanceRecommendation", resources=["another-vm"])
        reads = len(_versions(sim))
        assert sim.wait_for(lambda: len(_versions(sim)) >= reads + 3, 15)
        assert starts(record) == [] and daemon.events("notice.detected") == []
        mine = sim.add_event("SpotRebalanceRecommendation", source="Platform", duration=-1)
        wait_until(lambda: ends(record) == ["10-hook"], 15, "the rebalance hook")
        env = hook_env(record, "10-hook")
        assert (env["SPOTWATCH_EVENT"], env["SPOTWATCH_ACTION"]) == (
            "rebalance-recommendation", "rebalance",
        )  # fmt: skip
        assert env["SPOTWATCH_AZURE_EVENT_ID"] == mine
        assert env["SPOTWATCH_AZURE_EVENT_TYPE"] == "SpotRebalanceRecommendation"
        assert env["SPOTWATCH_AZURE_EVENT_SOURCE"] == "Platform"
        assert env["SPOTWATCH_AZURE_DURATION"] == "-1"
        assert env["SPOTWATCH_AZURE_EVENT_STATUS"] == "Scheduled"
        daemon.wait_for_event("notice.handled")
        # Read twice more (every 1 s), still listed: no second run, and never approved
        # (acknowledging a rebalance recommendation has no effect).
        reads = len(_versions(sim))
        assert sim.wait_for(lambda: len(_versions(sim)) >= reads + 2, 15)
        assert starts(record) == ["10-hook"]
        assert sim.approvals == []
        assert set(_versions(sim)) == {"2024-07-09"}
        assert daemon.events("azure.api_fallback") == []


def test_azure_old_service_404_falls_back_once_and_keeps_2020(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with AzureSimulator(versions=("2020-07-01",), refuse_status=404) as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "azure")
        daemon.wait_for_event("azure.events_started")
        mine = sim.add_event("Preempt", lead=60, source="Platform", duration=0)
        approvals = sim.wait_for_approval(timeout=20)
        assert [eid for _, eid in approvals] == [mine]
        env = hook_env(record, "10-hook")
        assert env["SPOTWATCH_EVENT"] == "spot-interruption"
        assert env["SPOTWATCH_AZURE_DURATION"] == "0"
        reads = len(_versions(sim))
        assert sim.wait_for(lambda: len(_versions(sim)) >= reads + 2, 15)
        # The newer version asked once, refused, then 2020-07-01 every time (approval too).
        asked = _versions(sim)
        assert asked[0] == "2024-07-09" and set(asked[1:]) == {"2020-07-01"}
        assert _versions(sim, "POST") == ["2020-07-01"]
        fallback = daemon.events("azure.api_fallback")
        assert len(fallback) == 1
        assert (fallback[0]["status"], fallback[0]["using"]) == (404, "2020-07-01")
        assert daemon.events("imds.fault") == []  # a refused version is no fault


# -- Google ------------------------------------------------------------------------------

LEAD = 30.0


def _upcoming_reads(sim: GceSimulator) -> int:
    return len(sim.requests(BASE_PATH + UPCOMING))


def _start_gcp(sim: GceSimulator, hooks_dir: Path, daemons: Daemons) -> Daemon:
    daemon = daemons.start(sim.url, hooks_dir, "--cloud", "gcp", "--watch", "spot,maintenance",
                           "--maintenance-lead", f"{LEAD:g}")  # fmt: skip
    daemon.wait_for_event("maintenance.planned")
    return daemon


def test_gcp_upcoming_maintenance_planned_then_the_flip_folds_in(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with GceSimulator() as sim:
        window = float(int(time.time()) + LEAD + 12)
        sim.set_upcoming(upcoming_doc(window))
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "gcp", "--watch", "spot,maintenance",
                               "--maintenance-lead", f"{LEAD:g}")  # fmt: skip
        planned = daemon.wait_for_event("maintenance.planned")
        assert planned[0]["source"] == "gce:instance/upcoming-maintenance"
        wait_until(lambda: ends(record) == ["10-hook"], 30, "the maintenance hook")
        started = float(next(line.split()[2] for line in record.read_text().splitlines()
                             if line.startswith("10-hook start")))  # fmt: skip
        assert started >= window - LEAD - 0.5  # not before the lead
        env = hook_env(record, "10-hook")
        assert (env["SPOTWATCH_EVENT"], env["SPOTWATCH_ACTION"]) == (
            "scheduled-maintenance", "terminate",
        )  # fmt: skip
        assert int(env["SPOTWATCH_DEADLINE"]) == int(window)
        assert parse_time(env["SPOTWATCH_MAINTENANCE_WINDOW_START"]) == window
        assert env["SPOTWATCH_MAINTENANCE_TYPE"] == "SCHEDULED"
        assert env["SPOTWATCH_MAINTENANCE_REASONS"] == "HOST_UPDATE"
        assert env["SPOTWATCH_MAINTENANCE_CAN_RESCHEDULE"] == "true"
        assert env["SPOTWATCH_MAINTENANCE_STATUS"] == "PENDING"
        assert env["SPOTWATCH_MAINTENANCE_WINDOW_END"]
        daemon.wait_for_event("notice.handled")
        # 60 s before the window the maintenance-event value flips: the same end.
        sim.set_value(MAINTENANCE_EVENT, "TERMINATE_ON_HOST_MAINTENANCE")
        folded = daemon.wait_for_event("notice.folded")
        assert folded[0]["kind"] == "scheduled-maintenance"
        holds_for(lambda: starts(record) == ["10-hook"], 1.5, "one run for one end")


def test_gcp_upcoming_maintenance_rescheduled_runs_at_the_new_window(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with GceSimulator() as sim:
        first = float(int(time.time()) + LEAD + 15)
        sim.set_upcoming(upcoming_doc(first))
        daemon = _start_gcp(sim, hooks_dir, daemons)
        later = first + 8
        sim.set_upcoming(upcoming_doc(later))  # moved since the last read
        # At the old window's lead the fresh read finds the new window: nothing runs.
        wait_until(lambda: len(daemon.events("maintenance.planned")) >= 2, 30,
                   "the new window planned")  # fmt: skip
        assert time.time() < later - LEAD
        assert starts(record) == []
        assert daemon.events("maintenance.unplanned")
        wait_until(lambda: ends(record) == ["10-hook"], 20, "the hook at the new window")
        started = float(record.read_text().split("10-hook start ")[1].split()[0])
        assert started >= later - LEAD - 0.5
        assert int(hook_env(record, "10-hook")["SPOTWATCH_DEADLINE"]) == int(later)


def test_gcp_upcoming_maintenance_completed_before_its_hooks_runs_nothing(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with GceSimulator() as sim:
        window = float(int(time.time()) + LEAD + 12)
        sim.set_upcoming(upcoming_doc(window))
        daemon = _start_gcp(sim, hooks_dir, daemons)
        sim.set_upcoming(upcoming_doc(window, status="COMPLETE"))
        reads = _upcoming_reads(sim)
        # The fresh read at the lead says COMPLETE: the plan is dropped, no hooks.
        assert sim.wait_for(lambda: _upcoming_reads(sim) > reads, 30)
        wait_until(lambda: daemon.events("maintenance.unplanned"), 10, "unplanned")
        holds_for(lambda: starts(record) == [], 2.0, "no hooks for completed maintenance")
        assert daemon.events("notice.detected") == []
