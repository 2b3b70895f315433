"""The Slurm drain and resume examples against Debian's real slurmctld, slurmd and
munged (tests/slurm_cluster.py), run by ``spotwatch drill`` as spotwatch runs them.

Skips where slurm-wlm and munge are not installed or not root; .ci/run installs them,
runs as root and sets SPOTWATCH_REQUIRE_SLURM=1, so in CI it runs or fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import slurm_cluster
from tests.helpers import REPO, make_hooks_dir, wait_until, write_hook
from tests.slurm_cluster import NODE, SlurmCluster

_WHY_NOT = slurm_cluster.why_not()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_WHY_NOT is not None and not slurm_cluster.REQUIRED,
                       reason=f"real Slurm: {_WHY_NOT}"),
    pytest.mark.timeout(240),
]

DATA = REPO / "spotwatch" / "data"
# Prints what Slurm says of the node, so the drill's timeline shows it between the hooks.
SHOW_NODE = f"scontrol show node {NODE} | grep -E '^ *(State|Reason)='"


@pytest.fixture
def cluster() -> Iterator[SlurmCluster]:
    if _WHY_NOT is not None:
        pytest.fail(f"SPOTWATCH_REQUIRE_SLURM=1, but Slurm cannot run here: {_WHY_NOT}")
    box = SlurmCluster()
    try:
        box.start()
        yield box
    finally:
        box.stop()


def test_drain_then_resume_with_the_real_daemons(cluster: SlurmCluster, tmp_path: Path) -> None:
    long_job = cluster.submit("10")  # ten minutes: cannot finish in the time left
    short_job = cluster.submit("1")  # a minute (Slurm's least): can, in the 88 s given below
    wait_until(lambda: all(cluster.job(j)["JobState"] == "RUNNING" for j in (long_job, short_job)),
               60, "both jobs running", step=0.5)  # fmt: skip

    hooks = make_hooks_dir(tmp_path)
    shutil.copy(DATA / "hooks.d" / "examples" / "30-drain-slurm.sh", hooks)
    write_hook(hooks, "31-show-node", SHOW_NODE)
    resume = make_hooks_dir(tmp_path, "resume.d")
    shutil.copy(DATA / "resume.d" / "examples" / "30-resume-slurm.sh", resume)
    write_hook(resume, "31-show-node", SHOW_NODE)

    env = {**cluster.env, "SPOTWATCH_SLURM_NODE": NODE}
    env = {k: v for k, v in env.items() if not k.startswith("SPOTWATCH_") or k.endswith("_NODE")}
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--in", "0.5", "--hooks-dir", str(hooks),
         "--resume", "--resume-dir", str(resume), "--json",
         # 88 s for the drain hook: the lead, less 10 s margin and 30 s kept for the
         # hooks after it; the hook timeout less 2 s.
         "--lead", "130", "--hook-timeout", "90"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, (report["failures"], proc.stderr)

    drained = {h["name"]: [o["text"] for o in h["output"]] for h in report["hooks"]}
    reason = f"spotwatch: spot-interruption terminate at {report['notice_time']}"
    # While the instance ends: drained (a job still runs: DRAINING shows as MIXED+DRAIN),
    # with spotwatch's reason (Slurm adds who set it and when).
    state, why = drained["31-show-node"]
    assert "+DRAIN" in state.split("=")[1].split()[0], state
    assert why.strip().startswith(f"Reason={reason} [root@"), why
    assert f"drain-slurm: job {long_job} needs" in " ".join(drained["30-drain-slurm.sh"])
    assert f"drain-slurm: job {short_job} can finish" in " ".join(drained["30-drain-slurm.sh"])
    # The long job was requeued (to run elsewhere, not a failure); the short one left alone.
    assert cluster.job(long_job)["Restarts"] == "1"
    assert cluster.job(short_job)["Restarts"] == "0"

    # The way back: in service again, no reason left.
    back = {h["name"]: [o["text"] for o in h["output"]] for h in report["resume_hooks"]}
    assert back["30-resume-slurm.sh"] == [f"resume-slurm: node {NODE} back in service"]
    [state_after] = back["31-show-node"]
    assert "DRAIN" not in state_after, state_after
    node = cluster.node()
    assert "DRAIN" not in node["State"] and node.get("Reason", "none") in ("none", "(null)"), node


def test_resume_leaves_an_administrators_drain_alone(cluster: SlurmCluster) -> None:
    cluster.run("scontrol", "update", f"NodeName={NODE}", "State=DRAIN", "Reason=disk check")
    env = {k: v for k, v in cluster.env.items() if not k.startswith("SPOTWATCH_")}
    proc = subprocess.run(
        [str(DATA / "resume.d" / "examples" / "30-resume-slurm.sh")],
        env={**env, "SPOTWATCH_SLURM_NODE": NODE, "SPOTWATCH_PHASE": "resume"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "was not drained by spotwatch" in proc.stdout
    node = cluster.node()
    assert "DRAIN" in node["State"] and node["Reason"].startswith("disk check"), node
    assert os.environ.get("SLURM_CONF") != str(cluster.conf)  # the host's config untouched
