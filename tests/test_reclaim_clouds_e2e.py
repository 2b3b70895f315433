"""``spotwatch run`` as a subprocess on Alibaba Cloud and Tencent Cloud (simulated on
127.0.0.1): the reclaim time reaches the hooks as their deadline, Tencent's read in
UTC+8, with the identity each cloud's metadata gives."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spotwatch.imdssim_reclaim import AlibabaSimulator, TencentSimulator
from tests.helpers import Daemons, ends, holds_for, hook_env, recording_hook, starts, wait_until
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture

pytestmark = pytest.mark.slow

ALIBABA_PATH = "/latest/meta-data/instance/spot/termination-time"
TENCENT_PATH = "/latest/meta-data/spot/termination-time"


def test_tencent_reclaim_runs_hooks_with_the_utc8_time_as_deadline(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-first", record)
    recording_hook(hooks_dir, "20-second", record)
    with TencentSimulator() as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "tencent", interval=1)
        daemon.wait_for_event("watcher.started")
        assert sim.wait_for(lambda: len(sim.requests(TENCENT_PATH)) >= 2, 15)
        holds_for(lambda: starts(record) == [], 1.0, "no hooks while 404")
        reclaim_at = int(time.time()) + 100
        written = sim.schedule_reclaim(reclaim_at=reclaim_at)
        wait_until(lambda: ends(record) == ["10-first", "20-second"], 15, "both hooks")
        env = hook_env(record, "10-first")
        assert env["SPOTWATCH_CLOUD"] == "tencent"
        assert (env["SPOTWATCH_EVENT"], env["SPOTWATCH_ACTION"]) == (
            "spot-interruption", "terminate",
        )  # fmt: skip
        # The time as Tencent wrote it (UTC+8, no zone), the deadline read correctly:
        # read as UTC it would be eight hours late.
        assert env["SPOTWATCH_NOTICE_TIME"] == written
        assert int(env["SPOTWATCH_DEADLINE"]) == reclaim_at
        assert 80 < float(env["SPOTWATCH_SECONDS_LEFT"]) <= 100
        assert env["SPOTWATCH_INSTANCE_ID"] == "ins-sim0a1b2"
        assert env["SPOTWATCH_INSTANCE_TYPE"] == "S5.MEDIUM4"
        assert (env["SPOTWATCH_REGION"], env["SPOTWATCH_AZ"]) == ("ap-guangzhou", "ap-guangzhou-3")
        daemon.wait_for_event("notice.handled")
        holds_for(lambda: starts(record) == ["10-first", "20-second"], 2.5, "one run")
        decided = daemon.events("cloud.decided")
        assert decided[0]["cloud"] == "tencent" and decided[0]["how"] == "flag"


def test_alibaba_reclaim_with_token_required_runs_hooks_once(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    record = tmp_path / "record"
    recording_hook(hooks_dir, "10-hook", record)
    with AlibabaSimulator(require_token=True) as sim:
        daemon = daemons.start(sim.url, hooks_dir, "--cloud", "alibaba", interval=1)
        daemon.wait_for_event("watcher.started")
        assert sim.wait_for(lambda: len(sim.requests(ALIBABA_PATH)) >= 2, 15)
        reclaim_at = int(time.time()) + 290
        written = sim.schedule_reclaim(reclaim_at=reclaim_at)
        # Its end, not its start: the hook writes its environment in between.
        wait_until(lambda: ends(record) == ["10-hook"], 15, "the hook")
        env = hook_env(record, "10-hook")
        assert env["SPOTWATCH_CLOUD"] == "alibaba"
        assert env["SPOTWATCH_NOTICE_TIME"] == written
        assert int(env["SPOTWATCH_DEADLINE"]) == reclaim_at
        assert env["SPOTWATCH_INSTANCE_ID"] == "i-bp67acfmxazb4ph1sim"
        assert (env["SPOTWATCH_REGION"], env["SPOTWATCH_AZ"]) == ("cn-hangzhou", "cn-hangzhou-i")
        # Every read carried a token (the simulator refuses the others).
        assert all(r.status in (200, 404) for r in sim.requests(ALIBABA_PATH))
        daemon.wait_for_event("notice.handled")
        holds_for(lambda: starts(record) == ["10-hook"], 2.5, "one run")


def test_auto_finds_alibaba_and_tencent_from_dmi(
    tmp_path: Path, hooks_dir: Path, daemons: Daemons
) -> None:
    for cloud, sim_type, vendor, product in (
        ("alibaba", AlibabaSimulator, "Alibaba Cloud", "Alibaba Cloud ECS"),
        ("tencent", TencentSimulator, "Tencent Cloud", "CVM"),
    ):
        dmi = tmp_path / f"dmi-{cloud}"
        dmi.mkdir()
        (dmi / "sys_vendor").write_text(vendor + "\n")
        (dmi / "product_name").write_text(product + "\n")
        with sim_type() as sim:
            daemon = daemons.start(
                sim.url, hooks_dir, "--cloud", "auto", env={"SPOTWATCH_DMI_DIR": str(dmi)}
            )
            decided = daemon.wait_for_event("cloud.decided")
            assert (decided[0]["cloud"], decided[0]["how"]) == (cloud, "dmi")
            daemon.wait_for_event("watcher.started")
            daemon.stop()
