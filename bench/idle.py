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
- With ``--metrics-file``: a third watcher, ``spotwatch run --metrics-file``
  (its own simulator, so its polls are counted apart), runs at the same time;
  its CPU per poll and peak RSS are measured the same way, and its file must
  have counted every poll. At this interval it rewrites the file only every
  ROUTINE_WRITE_PERIOD (15 s) when nothing but the poll count changed; so one
  write's CPU is also timed here (in the same directory) and the CPU per poll
  at ``--interval 5`` (one write every third poll) is estimated from it.
- ``--prometheus-client``: a fourth watcher, a daemon that imports
  prometheus_client before starting, measured the same way: what using that
  library instead of the hand-written format would cost at least.
- boto3 not imported: a separate short run of the daemon under
  ``python -X importtime`` lists every module it imported while starting and
  polling; none may be boto3, botocore or s3transfer.

Usage: ``.venv/bin/python bench/idle.py [--polls 500] [--interval 0.1] [--prometheus-client]``.
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

from spotwatch.imdssim import INSTANCE_ACTION_PATH, ImdsSimulator
from spotwatch.metrics import ROUTINE_WRITE_PERIOD, MetricsFile

GOAL_CPU_FRACTION = 0.2  # of the shell loop's CPU per poll
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
    parser.add_argument(
        "--prometheus-client",
        action="store_true",
        help="also run a daemon that imports prometheus_client first (what using it would "
        "cost at least; needs it installed)",
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
        return sum(
            1
            for r in self._sim.requests(INSTANCE_ACTION_PATH)
            if r.headers.get("user-agent", "").startswith(agent_prefix)
        )


def measure(args: argparse.Namespace, cleanup: Cleanup) -> Table:
    need_tool("curl", "curl")
    need_tool("bash", "bash")
    sim = ImdsSimulator(require_token=True).start()
    cleanup.on_close(sim.stop)
    sim_m = ImdsSimulator(require_token=True).start()  # the --metrics-file daemon's own
    cleanup.on_close(sim_m.stop)
    work = cleanup.tempdir("idle")
    hooks_dir = work / "hooks.d"
    hooks_dir.mkdir(mode=0o755)
    counter = Counter(sim)
    counter_m = Counter(sim_m)
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
    textfile_dir = work / "textfile"
    textfile_dir.mkdir()
    prom = textfile_dir / "spotwatch.prom"
    daemon_m = Daemon(
        cleanup,
        sim_m.url,
        interval=args.interval,
        hooks_dir=hooks_dir,
        state_dir=work / "state-metrics",
        log_path=work / "daemon-metrics.log",
        extra=("--metrics-file", str(prom)),
    )
    loop = cleanup.popen(
        ["bash", "-c", SHELL_LOOP, "bash", sim.url, str(last), f"{args.interval:g}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    daemons = [daemon, daemon_m]
    watched = [
        ("spotwatch", counter, "spotwatch/", daemon.pid),
        ("metrics", counter_m, "spotwatch/", daemon_m.pid),
        ("loop", counter, "curl/", loop.pid),
    ]
    sims = [sim, sim_m]
    if args.prometheus_client:
        sim_p = ImdsSimulator(require_token=True).start()
        cleanup.on_close(sim_p.stop)
        daemon_p = Daemon(
            cleanup,
            sim_p.url,
            interval=args.interval,
            hooks_dir=hooks_dir,
            state_dir=work / "state-prom",
            log_path=work / "daemon-prom.log",
            python_flags=("-c", WITH_PROMETHEUS_CLIENT),
        )
        daemons.append(daemon_p)
        sims.append(sim_p)
        watched.append(("prometheus_client", Counter(sim_p), "spotwatch/", daemon_p.pid))
    marks: dict[str, dict[str, float]] = {name: {} for name, *_ in watched}
    started = time.monotonic()
    while not all("end" in mark for mark in marks.values()):
        if time.monotonic() - started > timeout:
            raise BenchError(f"the watchers did not reach {last} polls within {timeout:.0f} s")
        for d in daemons:
            if d.proc.poll() is not None:
                raise BenchError(f"spotwatch run exited early; see {d.log_path}")
        for name, count_of, agent, pid in watched:
            mark = marks[name]
            if "end" in mark:
                continue
            seen = count_of.count(agent)
            if "start" not in mark and seen >= first:
                mark["start"] = cpu_seconds(pid, children=(name == "loop"))
                mark["t_start"] = time.monotonic()
                if name == "loop":
                    mark["bash_hwm"] = status_kib(pid, "VmHWM")
            if "start" in mark and seen >= last:
                mark["t_end"] = time.monotonic()
                if name != "loop":
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

    # Written after its last counted poll: give that write a moment.
    wait_until(lambda: polls_total(prom) >= last, 10, f"{last} polls in {prom}")
    for d in daemons:
        d.proc.terminate()
        d.proc.wait(timeout=10)
    # All must have polled properly (404: no notice), not collected 401s.
    for s in sims:
        odd = sorted({r.status for r in s.requests(INSTANCE_ACTION_PATH) if r.status != 404})
        if odd:
            raise BenchError(f"polls answered {odd}, not 404: the comparison would be unfair")
    boto = imported_forbidden(cleanup, sim, hooks_dir, work)

    one_write = write_cpu(prom)
    sw, sh, sm = marks["spotwatch"], marks["loop"], marks["metrics"]
    sm_cpu = (sm["end"] - sm["start"]) / args.polls
    sm_rss = sm["hwm"] / 1024
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
        "CPU per poll, --metrics-file (ms)",
        f"{sm_cpu * 1000:.2f}",
        f"{sh_cpu * 1000:.2f}",
        ratio(sm_cpu, sh_cpu),
        f"<= {GOAL_CPU_FRACTION:g} x baseline",
        sm_cpu <= GOAL_CPU_FRACTION * sh_cpu,
    )
    table.add(
        "peak RSS, --metrics-file (MiB)",
        f"{sm_rss:.1f}",
        f"{sh_rss:.1f}",
        ratio(sm_rss, sh_rss),
        f"<= {GOAL_RSS_MIB:g} MiB",
        sm_rss <= GOAL_RSS_MIB,
    )
    at_5 = sm_cpu + one_write * 5 / ROUTINE_WRITE_PERIOD
    table.add(
        "CPU per poll at --interval 5, --metrics-file (ms, est.)",
        f"{at_5 * 1000:.2f}",
        f"{sh_cpu * 1000:.2f}",
        ratio(at_5, sh_cpu),
        f"<= {GOAL_CPU_FRACTION:g} x baseline",
        at_5 <= GOAL_CPU_FRACTION * sh_cpu,
    )
    table.add("one metrics file write (ms CPU)", f"{one_write * 1000:.3f}")
    if "prometheus_client" in marks:
        sp = marks["prometheus_client"]
        sp_rss = sp["hwm"] / 1024
        sp_cpu = (sp["end"] - sp["start"]) / args.polls
        table.add(
            "peak RSS, prometheus_client imported (MiB)",
            f"{sp_rss:.1f}",
            f"{sh_rss:.1f}",
            ratio(sp_rss, sh_rss),
            f"<= {GOAL_RSS_MIB:g} MiB",
            sp_rss <= GOAL_RSS_MIB,
        )
        table.add("CPU per poll, prometheus_client imported (ms)", f"{sp_cpu * 1000:.2f}")
    table.add(
        "boto3/botocore imported",
        ", ".join(boto) if boto else "no",
        "-",
        "-",
        "no",
        not boto,
    )
    table.add("CPU share at --interval 5 (%)", f"{sw_cpu / 5 * 100:.3f}", f"{sh_cpu / 5 * 100:.3f}")
    table.add("seconds per poll (measured)", f"{sw_period:.3f}", f"{sh_period:.3f}")
    return table


# ``python -c`` this, then ``-m spotwatch run ...``: argv is ['-c', '-m', 'spotwatch', ...].
WITH_PROMETHEUS_CLIENT = (
    "import sys, prometheus_client; from spotwatch.cli import main; sys.exit(main(sys.argv[3:]))"
)


def write_cpu(prom: Path, writes: int = 200) -> float:
    """CPU seconds of one metrics file write (temp file, rename) beside ``prom``, the mean."""
    text = prom.read_text()
    out = MetricsFile(prom.with_name("bench-write.prom"))
    started = time.process_time()
    for i in range(writes):
        if not out.write(f"{text}# {i}\n"):
            raise BenchError(f"could not write {out.path}")
    spent = time.process_time() - started
    out.path.unlink()
    return spent / writes


def polls_total(prom: Path) -> int:
    """spotwatch_polls_total from the metrics file (0 if it is not there yet)."""
    try:
        text = prom.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("spotwatch_polls_total "):
            return int(float(line.split()[1]))
    return 0


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
    cleanup: Cleanup, sim: ImdsSimulator, hooks_dir: Path, work: Path, polls: int = 3
) -> list[str]:
    """Modules of FORBIDDEN packages imported by a short ``-X importtime`` run of the daemon."""
    counter = Counter(sim)
    before = counter.count("spotwatch/")
    log = work / "importtime.log"
    daemon = Daemon(
        cleanup,
        sim.url,
        interval=0.2,
        hooks_dir=hooks_dir,
        state_dir=work / "state-importtime",
        log_path=log,
        python_flags=("-X", "importtime"),
    )
    daemon.wait_for_event("watcher.started")
    wait_until(lambda: counter.count("spotwatch/") >= before + polls, 20, f"{polls} polls")
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
