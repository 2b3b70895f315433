"""``spotwatch run`` as a subprocess on Google Compute Engine and Azure (simulated)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from spotwatch.imdssim_azure import EVENTS_PATH, AzureSimulator
from spotwatch.imdssim_gcp import BASE_PATH, MAINTENANCE_EVENT, PREEMPTED, GceSimulator
from tests.helpers import (
    Daemons,
    ends,
    hook_env,
    recording_hook,
    starts,
    wait_until,
    write_hook,
)
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture

pytestmark = pytest.mark.slow


# -- Google ------------------------------------------------------------------------------


def test_gcp_preemption_runs_hooks_once_well_inside_one_interval(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-first", record)
    recording_hook(hooks_dir, "20-second", record)
    with GceSimulator() as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "gcp", interval=5)
        daemon.wait_for_event("watcher.started")
        # Both values read once, then held in hanging GETs.
        assert sim.wait_for(lambda: sim.arrived(BASE_PATH + PREEMPTED) >= 2, 15)
        sim.set_value(PREEMPTED, "TRUE")
        changed = sim.changed_at(PREEMPTED)
        assert changed is not None
        wait_until(lambda: len(starts(record)) >= 2 and "20-second end" in record.read_text(),
                   15, "both hooks")  # fmt: skip
        first = next(float(r.split()[2]) for r in record.read_text().splitlines()
                     if r.startswith("10-first start"))  # fmt: skip
        # "Well inside one interval" (5 s): the generous bound is for loaded CI machines.
        assert first - changed < 2.0
        time.sleep(1.5)
        assert starts(record) == ["10-first", "20-second"]
        env = hook_env(record, "10-first")
        assert env["SPOTWATCH_CLOUD"] == "gcp"
        assert env["SPOTWATCH_EVENT"] == "spot-interruption"
        assert env["SPOTWATCH_ACTION"] == "terminate"
        assert env["SPOTWATCH_INSTANCE_ID"] == "4520031799277581759"
        assert env["SPOTWATCH_INSTANCE_TYPE"] == "e2-standard-4"
        assert (env["SPOTWATCH_REGION"], env["SPOTWATCH_AZ"]) == ("us-central1", "us-central1-a")
        assert int(env["SPOTWATCH_DEADLINE"]) == pytest.approx(changed + 30, abs=2)
        decided = daemon.events("cloud.decided")
        assert decided[0]["cloud"] == "gcp" and decided[0]["how"] == "flag"


def test_gcp_faults_are_survived_and_logged_once(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with GceSimulator() as sim:
        sim.inject("no-header", count=None, path=BASE_PATH + PREEMPTED)
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "gcp")
        faults = daemon.wait_for_event("imds.fault")
        assert faults[0]["kind"] == "not-google"
        assert "Metadata-Flavor" in faults[0]["advice"]
        sim.clear_faults()
        for fault in ("503", "drop", "garbled", "reset"):
            sim.inject(fault, count=1, path=BASE_PATH + PREEMPTED)
        daemon.wait_for_event("imds.recovered", timeout=30)
        time.sleep(1)
        sim.set_value(PREEMPTED, "TRUE")
        wait_until(lambda: starts(record) == ["10-hook"], 20, "the hook after the faults")
        assert daemon.proc.poll() is None
        # Each fault once, not on every poll (a handful of distinct kinds at most).
        assert len(daemon.events("imds.fault")) <= 6


def test_gcp_maintenance_terminate_and_migrate_only_when_watched(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with GceSimulator() as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "gcp")
        daemon.wait_for_event("watcher.started")
        assert sim.wait_for(lambda: sim.arrived(BASE_PATH + MAINTENANCE_EVENT) >= 2, 15)
        sim.set_value(MAINTENANCE_EVENT, "MIGRATE_ON_HOST_MAINTENANCE")
        time.sleep(2)
        assert starts(record) == []  # migrate is not watched by default
        sim.set_value(MAINTENANCE_EVENT, "TERMINATE_ON_HOST_MAINTENANCE")
        wait_until(lambda: ends(record) == ["10-hook"], 15, "the maintenance hook to finish")
        env = hook_env(record, "10-hook")
        assert (env["SPOTWATCH_EVENT"], env["SPOTWATCH_ACTION"]) == (
            "scheduled-maintenance", "terminate",
        )  # fmt: skip


def test_gcp_restart_mid_hooks_resumes_from_the_journal(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-quick", record)
    recording_hook(hooks_dir, "20-slow", record, extra="sleep 30")
    recording_hook(hooks_dir, "30-last", record)
    with GceSimulator() as sim:
        first = daemons.start(sim.url, hooks_dir, "--cloud", "gcp")
        first.wait_for_event("watcher.started")
        sim.set_value(PREEMPTED, "TRUE")
        wait_until(lambda: "20-slow" in starts(record), 15, "the slow hook")
        (slow,) = wait_until(
            lambda: [e for e in first.events("hook.started") if e["hook"] == "20-slow"],
            10, "hook.started 20-slow",
        )  # fmt: skip
        first.signal(signal.SIGKILL)
        first.wait()
        # systemd's KillMode=mixed kills the hook's group too; do the same here (a
        # group left alive would be waited for, not run beside: test_run_faults_core).
        os.killpg(int(slow["pid"]), signal.SIGKILL)
        recording_hook(hooks_dir, "20-slow", record)  # quick this time: 30 s is all there is
        second = daemons.start(sim.url, hooks_dir, "--cloud", "gcp")
        second.wait_for_event("notice.handled", timeout=40)
        time.sleep(1.5)
        # 10-quick finished before the kill: not again. 20-slow was cut: run again.
        assert starts(record) == ["10-quick", "20-slow", "20-slow", "30-last"]


# -- Azure -------------------------------------------------------------------------------


def test_azure_event_for_another_vm_runs_nothing_and_is_not_approved(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with AzureSimulator() as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "azure")
        daemon.wait_for_event("azure.events_started")
        sim.add_event("Preempt", resources=["another-vm"])
        sim.add_event("Terminate", resources=["another-vm", "third-vm"])
        count = len(sim.requests(EVENTS_PATH, "GET"))
        assert sim.wait_for(lambda: len(sim.requests(EVENTS_PATH, "GET")) >= count + 3, 15)
        assert starts(record) == []
        assert sim.approvals == []
        assert daemon.events("notice.detected") == []


def test_azure_preempt_runs_hooks_then_approves_the_right_event(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-first", record)
    recording_hook(hooks_dir, "20-second", record, extra="sleep 1")
    with AzureSimulator(first_answer_delay=2.0) as sim:
        # Default interval on Azure: 1 s (no --interval given).
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "azure", interval=None)
        other = sim.add_event("Preempt", resources=["another-vm"])
        mine = sim.add_event("Preempt", at=time.time() + 3, lead=60)
        approvals = sim.wait_for_approval(timeout=20)
        assert [eid for _, eid in approvals] == [mine] and other != mine
        wait_until(lambda: "20-second end" in record.read_text(), 5, "the last hook's end")
        last_end = float(record.read_text().split("20-second end ")[1].split()[0])
        assert approvals[0][0] >= last_end  # after the last hook
        env = hook_env(record, "10-first")
        assert env["SPOTWATCH_CLOUD"] == "azure"
        assert (env["SPOTWATCH_EVENT"], env["SPOTWATCH_ACTION"]) == (
            "spot-interruption", "terminate",
        )  # fmt: skip
        assert env["SPOTWATCH_AZURE_EVENT_ID"] == mine
        assert env["SPOTWATCH_INSTANCE_TYPE"] == "Standard_D2s_v3"
        assert env["SPOTWATCH_REGION"] == "westeurope"
        # The event goes on to Started: the same EventId, the same notice, no rerun.
        time.sleep(2.5)
        assert starts(record) == ["10-first", "20-second"]
        assert daemon.events("watcher.started")[0]["interval"] == 1.0
        assert daemon.events("imds.fault") == []  # the slow first answer is no fault


def test_azure_no_approve_and_maintenance_watch(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with AzureSimulator() as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "azure",
                        "--no-approve", "--watch", "spot,maintenance")  # fmt: skip
        daemon.wait_for_event("azure.events_started")
        sim.add_event("Freeze", lead=60)
        wait_until(lambda: ends(record) == ["10-hook"], 15, "the freeze hook to finish")
        daemon.wait_for_event("notice.handled")
        env = hook_env(record, "10-hook")
        assert (env["SPOTWATCH_EVENT"], env["SPOTWATCH_ACTION"]) == (
            "scheduled-maintenance", "freeze",
        )  # fmt: skip
        time.sleep(1.5)
        assert sim.approvals == []


def test_azure_faults_survived_and_logged_once(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with AzureSimulator() as sim:
        sim.inject("503", count=None, path=EVENTS_PATH)
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "azure")
        fault = daemon.wait_for_event("imds.fault")[0]
        assert fault["kind"] == "server-error"
        polls = sim.arrived(EVENTS_PATH)
        assert sim.wait_for(lambda: sim.arrived(EVENTS_PATH) >= polls + 2, 15)  # two more 503s
        assert len(daemon.events("imds.fault")) == 1
        sim.clear_faults()
        sim.inject("garbled", count=2, path=EVENTS_PATH)
        sim.inject("drop", count=2, path=EVENTS_PATH)
        daemon.wait_for_event("imds.recovered", timeout=20)
        sim.add_event("Preempt", lead=60)
        wait_until(lambda: starts(record) == ["10-hook"], 20, "the hook after the faults")
        assert daemon.proc.poll() is None


def test_azure_restart_mid_hooks_resumes_and_approves_once_done(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-quick", record)
    recording_hook(hooks_dir, "20-slow", record, extra="sleep 30")
    with AzureSimulator() as sim:
        first = daemons.start(sim.url, hooks_dir, "--cloud", "azure")
        first.wait_for_event("azure.events_started")
        mine = sim.add_event("Preempt", lead=90)
        wait_until(lambda: "20-slow" in starts(record), 15, "the slow hook")
        (slow,) = wait_until(
            lambda: [e for e in first.events("hook.started") if e["hook"] == "20-slow"],
            10, "hook.started 20-slow",
        )  # fmt: skip
        first.signal(signal.SIGKILL)
        first.wait()
        os.killpg(int(slow["pid"]), signal.SIGKILL)  # as systemd's KillMode=mixed would
        assert sim.approvals == []
        write_hook(hooks_dir, "20-slow", 'echo "20-slow start now" >> ' + str(record))
        second = daemons.start(sim.url, hooks_dir, "--cloud", "azure")
        second.wait_for_event("notice.handled", timeout=30)
        assert [eid for _, eid in sim.wait_for_approval(10)] == [mine]
        assert starts(record) == ["10-quick", "20-slow", "20-slow"]


@pytest.mark.parametrize("cloud", ["gcp", "azure"])
def test_auto_picks_the_cloud_by_probing_and_from_dmi(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, cloud: str
) -> None:
    empty = tmp_path / "dmi-empty"
    empty.mkdir()
    sim_type = GceSimulator if cloud == "gcp" else AzureSimulator
    with sim_type() as sim:
        probed = daemons.start(sim.url, hooks_dir, "--cloud", "auto",
                        env={"SPOTWATCH_DMI_DIR": str(empty)})  # fmt: skip
        decided = probed.wait_for_event("cloud.decided")[0]
        assert (decided["cloud"], decided["how"]) == (cloud, "probe")
        probed.stop()  # one daemon per state directory
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "sys_vendor").write_text("Google\n" if cloud == "gcp" else "Microsoft Corporation\n")
    (dmi / "chassis_asset_tag").write_text("7783-7084-3265-9085-8269-3286-77\n")
    from_dmi = daemons.start("http://127.0.0.1:9", hooks_dir, "--cloud", "auto",
                      env={"SPOTWATCH_DMI_DIR": str(dmi)})  # fmt: skip
    decided = from_dmi.wait_for_event("cloud.decided")[0]
    assert (decided["cloud"], decided["how"]) == (cloud, "dmi")


@pytest.mark.parametrize("cloud", ["gcp", "azure"])
def test_idle_watching_never_imports_boto3(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons, cloud: str
) -> None:
    sim_type = GceSimulator if cloud == "gcp" else AzureSimulator
    with sim_type() as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", cloud, profile_imports=True)
        daemon.wait_for_event("identity.read")
        time.sleep(1.5)  # idle for a while: polls (and long polls) come and go
        imported = daemon.imported()
        assert "spotwatch.feed" in imported  # the list is real
        assert not [m for m in imported if m.split(".")[0] in ("boto3", "botocore")]
