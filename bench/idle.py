"""What spotwatch costs while it waits, next to the classic curl-and-sleep shell loop.

Both watchers poll the same IMDS simulator (IMDSv2 tokens required) at the same
interval, at the same time. Measured over ``--polls`` polls after ``--warmup``
polls (start-up is a one-off and is left out of the per-poll figure):

- CPU seconds per poll: utime + stime from /proc/<pid>/stat; for the shell
  loop, bash plus its reaped children (every curl and sleep it ran).
- Peak RSS: VmHWM of the daemon just before it is stopped; for the loop, bash's
  VmHWM (read during the loop) plus the peak of one curl poll, measured by GNU
  time (a curl runs beside bash at every poll). Not wait4's ru_maxrss of the
  loop: a process spawned with vfork carries the spawner's (this Python's)
  peak into its own, which would inflate the baseline.
- boto3 not imported: a separate short run of the daemon under
  ``python -X importtime`` lists every module it imported while starting and
  polling; none may be boto3, botocore or s3transfer.

Usage: ``.venv/bin/python bench/idle.py [--polls 500] [--interval 0.1]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from _common import (
    BenchError,
    Cleanup,
    Daemon,
    Table,
    conditions,
    cpu_seconds,
    machine,
    need_tool,
    ratio,
    run_main,
    status_kib,
    wait_until,
)

from spotwatch.imdssim import INSTANCE_ACTION_PATH, LIFECYCLE_PATH, ImdsSimulator

GOAL_CPU_FRACTION = 0.2  # of the shell loop's CPU per poll
# Every AWS source (issue 11): three GETs a poll (spot, rebalance, lifecycle state)
# and the maintenance list once a minute, against the loop's one path.
ALL_AWS = ("--watch", "spot,rebalance,maintenance,asg")
GOAL_ALL_AWS_CPU_FRACTION = 0.3
GOAL_RSS_MIB = 35.0
FORBIDDEN = ("boto3", "botocore", "s3transfer")

SHELL_LOOP = r"""
set -u
url=$1 polls=$2 interval=$3
token=$(curl -s -m 1 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" \
    "$url/latest/api/token")
for i in $(seq "$polls"); do
    curl -s -m 1 -H "X-aws-ec2-metadata-token: $token" \
        "$url/latest/meta-data/spot/instance-action" >/dev/null
    sleep "$interval"
done
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CPU per poll and peak RSS of 'spotwatch run' next to a curl+sleep loop.",
    )
    parser.add_argument("--polls", type=int, default=500, help="polls measured (default 500)")
    parser.add_argument(
        "--interval", type=float, default=0.1, help="seconds between polls, both (default 0.1)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="polls left out at the start (default 20)"
    )
    args = parser.parse_args()
    if args.polls < 1 or args.warmup < 2 or args.interval <= 0:
        parser.error("need --polls >= 1, --warmup >= 2 and --interval > 0")
    return args


class Counter:
    """GETs of instance-action per client, told apart by User-Agent."""

    def __init__(self, sim: ImdsSimulator) -> None:
        self._sim = sim

    def count(self, agent_prefix: str) -> int:
        polls = sum(
            1
            for r in self._sim.requests(INSTANCE_ACTION_PATH)
            if r.headers.get("user-agent", "").startswith(agent_prefix)
        )
        # The all-sources daemon's polls (the only one asking for the lifecycle state)
        # are not the single-source daemon's.
        return polls - self.all_aws() if agent_prefix == "spotwatch/" else polls

    def all_aws(self) -> int:
        return self._sim.count(LIFECYCLE_PATH)


def measure(args: argparse.Namespace, cleanup: Cleanup) -> Table:
    need_tool("curl", "curl")
    need_tool("bash", "bash")
    sim = ImdsSimulator(require_token=True).start()
    cleanup.on_close(sim.stop)
    work = cleanup.tempdir("idle")
    hooks_dir = work / "hooks.d"
    hooks_dir.mkdir(mode=0o755)
    counter = Counter(sim)
    first, last = args.warmup, args.warmup + args.polls
    period_guess = args.interval + 0.05
    timeout = 30 + last * period_guess * 2

    daemon = Daemon(
        cleanup,
        sim.url,
        interval=args.interval,
        hooks_dir=hooks_dir,
        state_dir=work / "state",
        log_path=work / "daemon.log",
    )
    all_aws = Daemon(
        cleanup,
        sim.url,
        interval=args.interval,
        hooks_dir=hooks_dir,
        state_dir=work / "state-all-aws",
        log_path=work / "daemon-all-aws.log",
        extra=ALL_AWS,
    )
    loop = cleanup.popen(
        ["bash", "-c", SHELL_LOOP, "bash", sim.url, str(last), f"{args.interval:g}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    marks: dict[str, dict[str, float]] = {"spotwatch": {}, "loop": {}, "all_aws": {}}
    started = time.monotonic()
    while not all("end" in mark for mark in marks.values()):
        if time.monotonic() - started > timeout:
            raise BenchError(f"the watchers did not reach {last} polls within {timeout:.0f} s")
        if daemon.proc.poll() is not None:
            raise BenchError(f"spotwatch run exited early; see {daemon.log_path}")
        watchers = (("spotwatch", "spotwatch/", daemon.pid), ("loop", "curl/", loop.pid))
        _mark_all_aws(marks["all_aws"], counter.all_aws(), all_aws, first, last)
        for name, agent, pid in watchers:
            mark = marks[name]
            if "end" in mark:
                continue
            seen = counter.count(agent)
            if "start" not in mark and seen >= first:
                mark["start"] = cpu_seconds(pid, children=(name == "loop"))
                mark["t_start"] = time.monotonic()
                if name == "loop":
                    mark["bash_hwm"] = status_kib(pid, "VmHWM")
            if "start" in mark and seen >= last:
                mark["t_end"] = time.monotonic()
                if name == "spotwatch":
                    mark["end"] = cpu_seconds(pid)
                    mark["hwm"] = status_kib(pid, "VmHWM")
                else:
                    # Its last curl is done; wait for its last sleep and reap it
                    # with its children's total (exact, in microseconds).
                    mark["bash_hwm"] = max(mark["bash_hwm"], status_kib(pid, "VmHWM"))
                    _, status, usage = os.wait4(pid, 0)
                    loop.returncode = os.waitstatus_to_exitcode(status)
                    mark["end"] = usage.ru_utime + usage.ru_stime
        time.sleep(0.01)

    for proc in (daemon.proc, all_aws.proc):
        proc.terminate()
        proc.wait(timeout=10)
    # Both must have polled properly (404: no notice), not collected 401s.
    odd = sorted({r.status for r in sim.requests(INSTANCE_ACTION_PATH) if r.status != 404})
    if odd:
        raise BenchError(f"polls answered {odd}, not 404: the comparison would be unfair")
    boto = imported_forbidden(cleanup, sim, hooks_dir, work)
    boto_all = imported_forbidden(cleanup, sim, hooks_dir, work, extra=ALL_AWS)

    sw, sh = marks["spotwatch"], marks["loop"]
    sw_cpu = (sw["end"] - sw["start"]) / args.polls
    sh_cpu = (sh["end"] - sh["start"]) / args.polls
    sw_rss = sw["hwm"] / 1024
    sh_rss = (sh["bash_hwm"] + curl_peak_kib(cleanup, sim.url, work)) / 1024
    sw_period = (sw["t_end"] - sw["t_start"]) / args.polls
    sh_period = (sh["t_end"] - sh["t_start"]) / args.polls

    table = Table(
        f"idle: {args.polls} polls after {args.warmup} warm-up polls, "
        f"--interval {args.interval:g} for both, IMDSv2"
    )
    table.add(
        "CPU per poll (ms)",
        f"{sw_cpu * 1000:.2f}",
        f"{sh_cpu * 1000:.2f}",
        ratio(sw_cpu, sh_cpu),
        f"<= {GOAL_CPU_FRACTION:g} x baseline",
        sw_cpu <= GOAL_CPU_FRACTION * sh_cpu,
    )
    table.add(
        "peak RSS (MiB)",
        f"{sw_rss:.1f}",
        f"{sh_rss:.1f}",
        ratio(sw_rss, sh_rss),
        f"<= {GOAL_RSS_MIB:g} MiB",
        sw_rss <= GOAL_RSS_MIB,
    )
    table.add(
        "boto3/botocore imported",
        ", ".join(boto) if boto else "no",
        "-",
        "-",
        "no",
        not boto,
    )
    aw = marks["all_aws"]
    aw_cpu = (aw["end"] - aw["start"]) / args.polls
    aw_rss = aw["hwm"] / 1024
    table.add(
        "all AWS sources: CPU per poll (ms)",
        f"{aw_cpu * 1000:.2f}",
        f"{sh_cpu * 1000:.2f}",
        ratio(aw_cpu, sh_cpu),
        f"<= {GOAL_ALL_AWS_CPU_FRACTION:g} x baseline",
        aw_cpu <= GOAL_ALL_AWS_CPU_FRACTION * sh_cpu,
    )
    table.add(
        "all AWS sources: peak RSS (MiB)",
        f"{aw_rss:.1f}",
        f"{sh_rss:.1f}",
        ratio(aw_rss, sh_rss),
        f"<= {GOAL_RSS_MIB:g} MiB",
        aw_rss <= GOAL_RSS_MIB,
    )
    table.add(
        "all AWS sources: boto3 imported",
        ", ".join(boto_all) if boto_all else "no",
        "-",
        "-",
        "no",
        not boto_all,
    )
    table.add("CPU share at --interval 5 (%)", f"{sw_cpu / 5 * 100:.3f}", f"{sh_cpu / 5 * 100:.3f}")
    table.add("seconds per poll (measured)", f"{sw_period:.3f}", f"{sh_period:.3f}")
    return table


def _mark_all_aws(mark: dict[str, float], seen: int, daemon: Daemon, first: int, last: int) -> None:
    """CPU and peak RSS of the all-sources daemon at its ``first`` and ``last`` polls."""
    if "end" in mark:
        return
    if daemon.proc.poll() is not None:
        raise BenchError(f"spotwatch run {' '.join(ALL_AWS)} exited early; see {daemon.log_path}")
    if "start" not in mark and seen >= first:
        mark["start"] = cpu_seconds(daemon.pid)
    if "start" in mark and seen >= last:
        mark["end"] = cpu_seconds(daemon.pid)
        mark["hwm"] = status_kib(daemon.pid, "VmHWM")


def curl_peak_kib(cleanup: Cleanup, url: str, work: Path, tries: int = 3) -> float:
    """Peak RSS (KiB) of one poll's curl, as GNU time reports it; the largest of ``tries``."""
    out = work / "curl-rss"
    script = SHELL_LOOP.replace(
        "    curl -s", f'    "$time" -f %M -a -o "{out}" curl -s'
    ).replace("set -u\n", 'set -u\ntime=$4\n')
    proc = cleanup.popen(
        ["bash", "-c", script, "bash", url, str(tries), "0", need_tool("time", "time")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc.wait(timeout=30)
    peaks = [float(x) for x in out.read_text().split()] if out.exists() else []
    if len(peaks) != tries:
        raise BenchError(f"GNU time reported {len(peaks)} of {tries} curl peaks")
    return max(peaks)


def imported_forbidden(
    cleanup: Cleanup,
    sim: ImdsSimulator,
    hooks_dir: Path,
    work: Path,
    polls: int = 3,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """Modules of FORBIDDEN packages imported by a short ``-X importtime`` run of the daemon."""
    counter = Counter(sim)
    polled = counter.all_aws if extra else lambda: counter.count("spotwatch/")
    before = polled()
    tag = "-all-aws" if extra else ""
    log = work / f"importtime{tag}.log"
    daemon = Daemon(
        cleanup,
        sim.url,
        interval=0.2,
        hooks_dir=hooks_dir,
        state_dir=work / f"state-importtime{tag}",
        log_path=log,
        python_flags=("-X", "importtime"),
        extra=extra,
    )
    daemon.wait_for_event("watcher.started")
    wait_until(lambda: polled() >= before + polls, 20, f"{polls} polls")
    daemon.proc.terminate()
    daemon.proc.wait(timeout=10)
    modules = [
        line.rsplit("|", 1)[-1].strip()
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    if len(modules) < 10:
        raise BenchError(f"-X importtime listed only {len(modules)} modules; see {log}")
    return sorted({m for m in modules if m.split(".")[0] in FORBIDDEN})


def main() -> int:
    args = parse_args()
    print(f"machine: {machine()}", flush=True)
    est = (args.warmup + args.polls) * (args.interval + 0.02)
    total = args.warmup + args.polls
    print(f"running both watchers for {total} polls (~{est:.0f} s) ...", flush=True)
    with Cleanup() as cleanup:
        table = measure(args, cleanup)
    print(table.render())
    print(f"conditions at the end: {conditions()}")
    return 0


if __name__ == "__main__":
    run_main(main)
