"""The drain examples (hooks.d/examples, resume.d/examples) against recording stand-ins:
a fake kubectl, nomad, scontrol, squeue, aws, docker and systemctl first on PATH,
each writing its argv to a log and answering from a small table. The tests check
the exact command lines and that every timeout comes from the time left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow

EXAMPLES = REPO / "spotwatch" / "data" / "hooks.d" / "examples"
RESUME = REPO / "spotwatch" / "data" / "resume.d" / "examples"
ALL = sorted([*EXAMPLES.iterdir(), *RESUME.iterdir()])
TOOLS = ("kubectl", "nomad", "scontrol", "squeue", "aws", "docker", "systemctl", "hostname")

STANDIN = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
argv = [name] + sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
table = json.loads(open(os.environ["STANDIN_TABLE"]).read())
line = " ".join(argv)
best = max((k for k in table if line.startswith(k)), key=len, default=None)
answer = table.get(best, {{}})
sys.stdout.write(answer.get("stdout", ""))
sys.exit(answer.get("exit", 0))
"""


class Standins:
    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.jsonl"
        self.table_path = tmp_path / "table.json"
        self.table: dict[str, dict[str, Any]] = {"hostname": {"stdout": "node-1\n"}}
        self.state = tmp_path / "state"
        self.state.mkdir()
        for tool in TOOLS:
            path = self.bin / tool
            path.write_text(STANDIN.format(python=sys.executable))
            path.chmod(0o755)

    def answer(self, prefix: str, stdout: str = "", exit: int = 0) -> None:
        self.table[prefix] = {"stdout": stdout, "exit": exit}

    def calls(self, tool: str | None = None) -> list[list[str]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in calls if tool is None or c[0] == tool]

    def run(self, hook: Path, left: float = 100, **extra: str) -> subprocess.CompletedProcess[str]:
        self.table_path.write_text(json.dumps(self.table))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
        env.update({
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "STANDIN_LOG": str(self.log), "STANDIN_TABLE": str(self.table_path),
            "SPOTWATCH_EVENT": "spot-interruption", "SPOTWATCH_ACTION": "terminate",
            "SPOTWATCH_NOTICE_TIME": "2026-11-26T03:00:25Z",
            "SPOTWATCH_DEADLINE": str(int(time.time() + left)),
            "SPOTWATCH_HOOK_DEADLINE": str(int(time.time() + 300)),
            "SPOTWATCH_INSTANCE_ID": "i-0123456789abcdef0", "SPOTWATCH_REGION": "eu-west-1",
            "SPOTWATCH_DEADLINE_MARGIN": "10", "SPOTWATCH_RESERVE_AFTER": "30",
            "SPOTWATCH_STATE_DIR": str(self.state),
        })  # fmt: skip
        env.update(extra)
        return subprocess.run([str(hook)], env=env, capture_output=True, text=True,
                              timeout=60, check=False, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture
def standins(tmp_path: Path) -> Standins:
    return Standins(tmp_path)


def seconds(text: str) -> int:
    return int(text.rstrip("s"))


def near(value: int, expected: int) -> bool:
    """The hook reads the clock a little after the test: a second or two less, never more."""
    return expected - 3 <= value <= expected


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("hook", ALL, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_shellcheck_and_mode(hook: Path) -> None:
    from spotwatch.hooks import name_problem

    result = subprocess.run(["shellcheck", "--norc", str(hook)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert os.access(hook, os.X_OK) and name_problem(hook.name) is None
    text = hook.read_text()
    assert "\n# Needs: " in text  # what `spotwatch hooks --examples` shows


def test_kubernetes_cordons_then_drains_ordinary_pods_before_the_last(standins: Standins) -> None:
    result = standins.run(EXAMPLES / "30-drain-kubernetes.sh", left=100)
    assert result.returncode == 0, result.stderr
    cordon, first, last = standins.calls("kubectl")
    assert cordon == ["kubectl", "cordon", "node-1"]
    # 100 s left, less the 10 s margin and 30 s for the hooks after: 60 s; 10 s for the last pods.
    assert first[:7] == ["kubectl", "drain", "node-1", "--ignore-daemonsets",
                         "--delete-emptydir-data", "--force", "--pod-selector=!spotwatch.io/drain-last"]  # noqa: E501
    timeout = seconds(first[8].split("=")[1])
    assert near(timeout, 50) and first[7] == f"--grace-period={timeout - 2}"
    assert last[6] == "--pod-selector=spotwatch.io/drain-last"
    # The first drain came back at once: the last pods get all the rest, to the same end.
    assert near(seconds(last[8].split("=")[1]), 60)


def test_kubernetes_honours_the_hook_deadline(standins: Standins) -> None:
    soon = str(int(time.time() + 25))
    result = standins.run(EXAMPLES / "30-drain-kubernetes.sh", SPOTWATCH_HOOK_DEADLINE=soon,
                          SPOTWATCH_K8S_NODE="ip-10-0-0-1.ec2.internal")  # fmt: skip
    assert result.returncode == 0, result.stderr
    cordon, first, _ = standins.calls("kubectl")
    assert cordon == ["kubectl", "cordon", "ip-10-0-0-1.ec2.internal"]
    assert near(seconds(first[8].split("=")[1]), 13)  # 25 - 2 - 10 for the last pods


def test_kubernetes_resume_uncordons(standins: Standins) -> None:
    assert standins.run(RESUME / "30-uncordon-kubernetes.sh").returncode == 0
    assert standins.calls("kubectl") == [["kubectl", "uncordon", "node-1"]]


def test_nomad_drains_self_with_the_time_left_as_deadline(standins: Standins) -> None:
    result = standins.run(EXAMPLES / "30-drain-nomad.sh", left=100)
    assert result.returncode == 0, result.stderr
    [call] = standins.calls("nomad")
    assert call[:7] == ["nomad", "node", "drain", "-self", "-enable", "-ignore-system", "-yes"]
    assert call[7] == "-deadline" and near(seconds(call[8]), 60)
    assert standins.run(RESUME / "30-undrain-nomad.sh").returncode == 0
    assert standins.calls("nomad")[-1] == ["nomad", "node", "drain", "-self", "-disable", "-yes"]


def test_slurm_drains_with_reason_and_requeues_what_cannot_finish(standins: Standins) -> None:
    standins.answer("squeue", "101 1:00:00\n102 0:20\n103 UNLIMITED\n104 2-00:00:00\n")
    result = standins.run(EXAMPLES / "30-drain-slurm.sh", left=100)
    assert result.returncode == 0, result.stderr
    reason = "Reason=spotwatch: spot-interruption terminate at 2026-11-26T03:00:25Z"
    assert standins.calls("scontrol") == [
        ["scontrol", "update", "NodeName=node-1", "State=DRAIN", reason],
        ["scontrol", "requeue", "101"],
        ["scontrol", "requeue", "103"],
        ["scontrol", "requeue", "104"],
    ]
    assert standins.calls("squeue") == [
        ["squeue", "--noheader", "--nodelist=node-1", "--states=RUNNING", "--format=%i %L"]
    ]
    assert "job 102 can finish" in result.stdout


def test_slurm_resume_only_undoes_its_own_drain(standins: Standins) -> None:
    standins.answer("scontrol show node", "NodeName=node-1 State=IDLE+DRAIN Reason=maintenance\n")
    assert standins.run(RESUME / "30-resume-slurm.sh").returncode == 0
    assert standins.calls("scontrol") == [["scontrol", "show", "node", "node-1"]]
    standins.answer("scontrol show node", "NodeName=node-1 Reason=spotwatch: spot [root]\n")
    assert standins.run(RESUME / "30-resume-slurm.sh").returncode == 0
    assert standins.calls("scontrol")[-1] == [
        "scontrol", "update", "NodeName=node-1", "State=RESUME"
    ]


def test_ecs_sets_draining_and_waits_for_the_tasks(standins: Standins) -> None:
    arn = "arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/abc"
    standins.answer("aws --region eu-west-1 ecs list-container-instances", arn + "\n")
    standins.answer("aws --region eu-west-1 ecs describe-container-instances", "0\n")
    result = standins.run(EXAMPLES / "30-drain-ecs.sh", SPOTWATCH_ECS_CLUSTER="prod")
    assert result.returncode == 0, result.stderr
    listing, update, describe = standins.calls("aws")
    assert listing == ["aws", "--region", "eu-west-1", "ecs", "list-container-instances",
                       "--cluster", "prod", "--filter", "ec2InstanceId == i-0123456789abcdef0",
                       "--query", "containerInstanceArns[0]", "--output", "text"]  # fmt: skip
    assert update == ["aws", "--region", "eu-west-1", "ecs", "update-container-instances-state",
                      "--cluster", "prod", "--container-instances", arn, "--status", "DRAINING",
                      "--output", "text", "--query", "failures"]  # fmt: skip
    assert describe == ["aws", "--region", "eu-west-1", "ecs", "describe-container-instances",
                        "--cluster", "prod", "--container-instances", arn, "--query",
                        "containerInstances[0].runningTasksCount", "--output", "text"]  # fmt: skip
    assert "no task left" in result.stdout
    assert standins.run(RESUME / "30-activate-ecs.sh", SPOTWATCH_ECS_CLUSTER="prod").returncode == 0
    assert standins.calls("aws")[-1][9:11] == ["--status", "ACTIVE"]


def test_ecs_gives_up_with_the_time_left(standins: Standins) -> None:
    standins.answer("aws --region eu-west-1 ecs list-container-instances", "arn:x\n")
    standins.answer("aws --region eu-west-1 ecs describe-container-instances", "3\n")
    started = time.monotonic()
    result = standins.run(EXAMPLES / "30-drain-ecs.sh", left=44, SPOTWATCH_ECS_CLUSTER="prod")
    assert result.returncode == 0 and "still running" in result.stdout
    assert near(budget(result.stdout), 4)  # 44 - 10 - 30
    assert time.monotonic() - started < 15
    # Polled (every 2 s) until then: at least once, and no more than fits in 4 s.
    assert 1 <= len(standins.calls("aws")) - 2 <= 3


def test_ecs_honours_the_hook_deadline(standins: Standins) -> None:
    standins.answer("aws --region eu-west-1 ecs list-container-instances", "arn:x\n")
    standins.answer("aws --region eu-west-1 ecs describe-container-instances", "3\n")
    soon = str(int(time.time() + 8))
    result = standins.run(EXAMPLES / "30-drain-ecs.sh", left=100, SPOTWATCH_ECS_CLUSTER="prod",
                          SPOTWATCH_HOOK_DEADLINE=soon)  # fmt: skip
    assert result.returncode == 0 and near(budget(result.stdout), 6)  # 8 - 2


def budget(stdout: str) -> int:
    import re

    found = re.search(r"at the end of the (\d+) s", stdout)
    assert found, stdout
    return int(found.group(1))


def test_docker_stops_with_the_time_left_as_grace_and_resume_starts(standins: Standins) -> None:
    standins.answer("docker ps", "c1\nc2\n")
    result = standins.run(EXAMPLES / "40-stop-docker.sh", left=100)
    assert result.returncode == 0, result.stderr
    ps, stop = standins.calls("docker")
    assert ps == ["docker", "ps", "--quiet"]
    assert stop[:2] == ["docker", "stop"] and stop[2] == "--time" and stop[4:] == ["c1", "c2"]
    assert near(int(stop[3]), 58)
    assert (standins.state / "docker-stopped").read_text() == "c1\nc2\n"
    assert standins.run(RESUME / "40-start-docker.sh").returncode == 0
    assert standins.calls("docker")[-1] == ["docker", "start", "c1", "c2"]
    filtered = standins.run(EXAMPLES / "40-stop-docker.sh", SPOTWATCH_DOCKER_FILTER="label=app")
    assert filtered.returncode == 0 and standins.calls("docker")[-2] == [
        "docker", "ps", "--quiet", "--filter", "label=app"
    ]


def test_docker_and_nomad_honour_the_hook_deadline(standins: Standins) -> None:
    standins.answer("docker ps", "c1\n")
    soon = str(int(time.time() + 20))
    hook = EXAMPLES / "40-stop-docker.sh"
    assert standins.run(hook, SPOTWATCH_HOOK_DEADLINE=soon).returncode == 0
    stop = standins.calls("docker")[-1]
    assert stop[:3] == ["docker", "stop", "--time"] and near(int(stop[3]), 16)  # 20 - 2 - 2
    hook = EXAMPLES / "30-drain-nomad.sh"
    assert standins.run(hook, SPOTWATCH_HOOK_DEADLINE=soon).returncode == 0
    [nomad] = standins.calls("nomad")
    assert nomad[7] == "-deadline" and near(seconds(nomad[8]), 18)  # 20 - 2


def test_systemd_service_stops_within_the_time_left(standins: Standins) -> None:
    standins.answer("systemctl is-active", exit=3)
    result = standins.run(EXAMPLES / "40-stop-service.sh", SPOTWATCH_STOP_SERVICE="myapp.service")
    assert result.returncode == 0, result.stderr
    assert standins.calls("systemctl") == [
        ["systemctl", "stop", "--no-block", "myapp.service"],
        ["systemctl", "is-active", "--quiet", "myapp.service"],
    ]
    assert standins.run(RESUME / "40-start-service.sh",
                        SPOTWATCH_STOP_SERVICE="myapp.service").returncode == 0  # fmt: skip
    assert standins.calls("systemctl")[-1] == ["systemctl", "start", "myapp.service"]


def test_systemd_service_killed_when_the_time_is_up(standins: Standins) -> None:
    started = time.monotonic()
    result = standins.run(EXAMPLES / "40-stop-service.sh", left=43,
                          SPOTWATCH_STOP_SERVICE="myapp.service")  # fmt: skip
    assert result.returncode == 1
    assert standins.calls("systemctl")[-1] == ["systemctl", "kill", "--signal=SIGKILL",
                                               "myapp.service"]  # fmt: skip
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("hook", sorted(EXAMPLES.glob("30-*")) + sorted(EXAMPLES.glob("40-*")),
                         ids=lambda p: p.name)  # fmt: skip
def test_unconfigured_or_without_the_tool_skips(hook: Path, tmp_path: Path) -> None:
    """On a machine without the tool (PATH holds only coreutils), each skips and says so."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for tool in ("date", "hostname", "sleep", "grep", "cat", "rm"):
        found = shutil.which(tool)
        if found:
            (plain / tool).symlink_to(found)
    env = {"PATH": str(plain), "SPOTWATCH_DEADLINE": str(int(time.time()) + 100)}
    result = subprocess.run(["/bin/bash", str(hook)], env=env, capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "skipping" in result.stdout


def test_hooks_examples_lists_each_with_what_it_needs() -> None:
    result = subprocess.run([sys.executable, "-m", "spotwatch", "hooks", "--examples", "--json"],
                            capture_output=True, text=True, timeout=60, check=False, cwd=REPO)  # fmt: skip  # noqa: E501
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert sorted(e["path"].rsplit("/", 1)[1] for e in listed) == sorted(p.name for p in ALL)
    for example in listed:
        assert example["summary"] and example["needs"], example
    kube = next(e for e in listed if e["path"].endswith("30-drain-kubernetes.sh"))
    assert kube["resume"] == "resume.d/examples/30-uncordon-kubernetes.sh"
