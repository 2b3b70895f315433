"""A one-node Slurm cluster of Debian's real daemons, as plain processes on 127.0.0.1.

munged (its own key and socket), slurmctld and slurmd, all in the foreground, all
configured from one temp directory (``SLURM_CONF`` points the clients at it), on free
ports: nothing of the host's /etc/slurm or /run/munge is used or touched. slurmd runs
as root (it launches the jobs), so the cluster needs root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port, wait_until

NODE = "spotnode"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("scontrol", "squeue", "sbatch", "scancel")
# Set by .ci/run (root, Debian, slurm-wlm and munge installed): there the test must run.
REQUIRED = os.environ.get("SPOTWATCH_REQUIRE_SLURM") == "1"

CONF = """\
ClusterName=spotwatch-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
# No cgroups: the test may run in a container without a delegated cgroup tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Two CPUs whatever the machine has, so two one-CPU jobs run side by side.
SlurmdParameters=config_overrides
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={host} CPUs=2 RealMemory=100 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def why_not() -> str | None:
    """Why the cluster cannot run here, or None."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    if missing:
        return (f"{', '.join(missing)} not installed "
                "(apt-get install slurm-wlm munge, as .ci/run does)")  # fmt: skip
    if os.geteuid() != 0:
        return "slurmd must run as root to launch jobs"
    return None


class SlurmCluster:
    def __init__(self) -> None:
        # Short: a unix socket's path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="sw-slurm-"))
        self.dir.chmod(0o755)  # munged wants the socket's directory searchable by all
        self.conf = self.dir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        d = self.dir
        (d / "state").mkdir()
        (d / "spool").mkdir()
        key = d / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.conf.write_text(CONF.format(
            host=socket.gethostname().split(".")[0], dir=d, node=NODE,
            ctld_port=free_port(), slurmd_port=free_port(),
        ))  # fmt: skip
        # --force: munged declines to run as root without it.
        self._spawn("munged", "-F", "--force", f"--socket={d}/munge.sock", f"--key-file={key}",
                    f"--log-file={d}/munged.log", f"--pid-file={d}/munged.pid",
                    f"--seed-file={d}/munged.seed")  # fmt: skip
        wait_until(lambda: self._alive() and (d / "munge.sock").exists(), 20,
                   "munged's socket", step=0.1)  # fmt: skip
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-N", NODE, "-f", str(self.conf))
        wait_until(lambda: self._alive() and self.node_state().startswith("IDLE"), 60,
                   f"node {NODE} IDLE ({self._logs()})", step=0.5)  # fmt: skip

    def _spawn(self, *argv: str) -> None:
        log = open(self.dir / f"{argv[0]}.out", "wb")  # noqa: SIM115 (kept by the child)
        self.processes.append(subprocess.Popen(
            list(argv), env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
        log.close()

    def _alive(self) -> bool:
        for proc in self.processes:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[0]} exited {proc.returncode}: {self._logs()}")
        return True

    def _logs(self) -> str:
        parts = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"{name}: " + path.read_text(errors="replace")[-800:])
        return "\n".join(parts)

    def run(self, *argv: str) -> str:
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def node(self) -> dict[str, str]:
        """``scontrol show node``'s fields (Reason=... runs to the end of its line)."""
        fields: dict[str, str] = {}
        for line in self.run("scontrol", "show", "node", NODE).splitlines():
            line = line.strip()
            if line.startswith("Reason="):
                fields["Reason"] = line[len("Reason="):]
                continue
            for word in line.split():
                key, _, value = word.partition("=")
                fields.setdefault(key, value)
        return fields

    def node_state(self) -> str:
        try:
            return self.node().get("State", "")
        except AssertionError:
            return ""  # slurmctld not answering yet

    def job(self, job_id: str) -> dict[str, str]:
        fields: dict[str, str] = {}
        for word in self.run("scontrol", "show", "job", job_id).split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        return fields

    def submit(self, time_limit: str) -> str:
        """A job that would sleep for ten minutes, with ``sbatch -t time_limit``."""
        out = self.run("sbatch", "--parsable", "-t", time_limit, "-o", "/dev/null",
                       "--wrap", "sleep 600")  # fmt: skip
        return out.strip().split(";")[0]

    def stop(self) -> None:
        # Jobs first (slurmd does not end them when it stops), then the daemons.
        try:
            jobs = self.run("squeue", "--noheader", "--format=%i").split()
            if jobs:
                self.run("scancel", *jobs)
            wait_until(lambda: not self.run("squeue", "--noheader").strip(), 30,
                       "the jobs to end", step=0.5)  # fmt: skip
        except AssertionError:
            pass  # a daemon already gone: nothing more to ask it
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + 15
        for proc in reversed(self.processes):
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
