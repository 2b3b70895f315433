"""What spotwatch costs while it waits, next to the classic curl-and-sleep shell loop.

``spotwatch run`` daemons and the shell loop poll IMDS simulators (IMDSv2 tokens
required) at the same interval, all at the same time, side by side. The plain
daemon (one source, the spot notice) shares its simulator with the loop (told
apart by User-Agent); every other daemon has a simulator of its own, so its polls
are counted apart. Measured over ``--polls`` polls after ``--warmup`` polls
(start-up is a one-off and is left out of the per-poll figure):

- CPU seconds per poll: utime + stime from /proc/<pid>/stat; for the shell
  loop, bash plus its reaped children (every curl and sleep it ran).
  Goal: at most 0.1 x the loop's.
- Peak RSS: VmHWM of the daemon just before it is stopped; for the loop, bash's
  VmHWM (read during the loop) plus the peak of one curl poll, measured by GNU
  time (a curl runs beside bash at every poll). Not wait4's ru_maxrss of the
  loop: a process spawned with vfork carries the spawner's (this Python's)
  peak into its own, which would inflate the baseline. Goal: at most 30 MiB,
  for every daemon row.
- ``--metrics-file``: a daemon that writes the metrics file, measured the same
  way with the same goals; its file must have counted every poll. At this
  interval it rewrites the file only every ROUTINE_WRITE_PERIOD (15 s) when
  nothing but the poll count changed; so one write's CPU is also timed here (in
  the same directory) and the CPU per poll at ``--interval 5`` (one write every
  third poll) is estimated from it.
- ``--prometheus-client`` (optional): a daemon that imports prometheus_client
  before starting, measured the same way: what using that library instead of
  the hand-written format would cost at least.
- Every AWS source (``--watch spot,rebalance,maintenance,asg``): a daemon
  making three GETs a poll (spot, rebalance, lifecycle state) and reading the
  maintenance list once a minute, against the loop's one path. Goal: CPU per
  poll at most 0.2 x the loop's; peak RSS at most 30 MiB.
- Azure (``--cloud azure``): a daemon polling an Azure simulator of its own
  (Scheduled Events, no events), against the same loop: CPU per poll at most
  0.1 x the loop's; peak RSS at most 30 MiB.
- boto3 not imported: separate short runs of the daemon under
  ``python -X importtime``, once with the default source and once with every
  AWS source, list every module it imported while starting and polling; none
  may be boto3, botocore or s3transfer.

Google row (``--google-seconds``, default 120; 0 skips it): ``spotwatch run --cloud
gcp`` against the Google simulator and ``spotwatch run`` against the AWS one, both
at ``--interval 5``, side by side for that long after a 10 s warm-up: CPU seconds
per minute of each. Goals: Google's at most AWS's (its hanging GETs ask once per
20 s per value; the AWS watcher asks every 5 s); Google's peak RSS at most 30 MiB.

Usage: ``.venv/bin/python bench/idle.py [--polls 500] [--interval 0.1]
[--prometheus-client] [--google-seconds 120]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

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
from spotwatch.imdssim_azure import EVENTS_PATH, AzureSimulator
from spotwatch.metrics import ROUTINE_WRITE_PERIOD, MetricsFile
from spotwatch.simserver import Record

GOAL_CPU_FRACTION = 0.1  # of the shell loop's CPU per poll
GOAL_RSS_MIB = 30.0
FORBIDDEN = ("boto3", "botocore", "s3transfer")
# Every AWS source (issue 11): three GETs a poll (spot, rebalance, lifecycle state)
# and the maintenance list once a minute, against the loop's one path.
ALL_AWS = ("--watch", "spot,rebalance,maintenance,asg")
GOAL_ALL_AWS_CPU_FRACTION = 0.2

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
        "--interval", type=float, default=0.1, help="seconds between polls, all (default 0.1)"
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
    parser.add_argument(
        "--google-seconds",
        type=float,
        default=120.0,
        help="length of the Google row, idle at --interval 5 (default 120; 0 skips it)",
    )
    args = parser.parse_args()
    if args.polls < 1 or args.warmup < 2 or args.interval <= 0:
        parser.error("need --polls >= 1, --warmup >= 2 and --interval > 0")
    return args


class Simulator(Protocol):
    """What the AWS and the Azure simulators have in common here."""

    @property
    def url(self) -> str: ...

    def requests(self, path: str | None = None, method: str | None = None) -> list[Record]: ...


class Counter:
    """GETs of one path (instance-action by default) per client, told apart by User-Agent."""

    def __init__(self, sim: Simulator, path: str = INSTANCE_ACTION_PATH) -> None:
        self._sim = sim
        self._path = path

    def count(self, agent_prefix: str) -> int:
        return sum(
            1
            for r in self._sim.requests(self._path)
            if r.headers.get("user-agent", "").startswith(agent_prefix)
        )


def measure(args: argparse.Namespace, cleanup: Cleanup) -> Table:
    need_tool("curl", "curl")
    need_tool("bash", "bash")
    work = cleanup.tempdir("idle")
    hooks_dir = work / "hooks.d"
    hooks_dir.mkdir(mode=0o755)
    first, last = args.warmup, args.warmup + args.polls
    period_guess = args.interval + 0.05
    timeout = 30 + last * period_guess * 2

    textfile_dir = work / "textfile"
    textfile_dir.mkdir()
    prom = textfile_dir / "spotwatch.prom"
    # The daemons measured side by side: name, extra flags, python flags. Each polls
    # a simulator of its own; the plain one shares its simulator with the loop.
    variants: list[tuple[str, Sequence[str], Sequence[str]]] = [
        ("spotwatch", (), ()),
        ("metrics", ("--metrics-file", str(prom)), ()),
        ("all_aws", ALL_AWS, ()),
        ("azure", ("--cloud", "azure"), ()),
    ]
    if args.prometheus_client:
        variants.append(("prometheus_client", (), ("-c", WITH_PROMETHEUS_CLIENT)))
    sims: dict[str, Simulator] = {}
    aws_sims: dict[str, ImdsSimulator] = {}
    daemons: dict[str, Daemon] = {}
    for name, extra, python_flags in variants:
        if name == "azure":
            azure = AzureSimulator()
            azure.start()
            cleanup.on_close(azure.stop)
            sims[name] = azure
        else:
            aws = ImdsSimulator(require_token=True).start()
            cleanup.on_close(aws.stop)
            sims[name] = aws_sims[name] = aws
        daemons[name] = Daemon(
            cleanup,
            sims[name].url,
            interval=args.interval,
            hooks_dir=hooks_dir,
            state_dir=work / f"state-{name}",
            log_path=work / f"daemon-{name}.log",
            python_flags=python_flags,
            extra=extra,
        )
    sim = aws_sims["spotwatch"]
    loop = cleanup.popen(
        ["bash", "-c", SHELL_LOOP, "bash", sim.url, str(last), f"{args.interval:g}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    watched = [
        (name, Counter(sims[name], EVENTS_PATH if name == "azure" else INSTANCE_ACTION_PATH),
         "spotwatch/", d.pid)
        for name, d in daemons.items()
    ]  # fmt: skip
    watched.append(("loop", Counter(sim), "curl/", loop.pid))
    marks: dict[str, dict[str, float]] = {name: {} for name, *_ in watched}
    started = time.monotonic()
    while not all("end" in mark for mark in marks.values()):
        if time.monotonic() - started > timeout:
            raise BenchError(f"the watchers did not reach {last} polls within {timeout:.0f} s")
        for d in daemons.values():
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
    for d in daemons.values():
        d.proc.terminate()
        d.proc.wait(timeout=10)
    # All must have polled properly (404 on AWS, 200 on Azure: no notice), not
    # collected 401s or 400s.
    for name, s in sims.items():
        path, fine = (EVENTS_PATH, 200) if name == "azure" else (INSTANCE_ACTION_PATH, 404)
        odd = sorted({r.status for r in s.requests(path) if r.status != fine})
        if odd:
            raise BenchError(
                f"{name} polls answered {odd}, not {fine}: the comparison would be unfair"
            )
    boto = imported_forbidden(cleanup, sim, hooks_dir, work)
    boto_all = imported_forbidden(cleanup, sim, hooks_dir, work, extra=ALL_AWS)

    one_write = write_cpu(prom)
    polls: int = args.polls

    def cpu_per_poll(name: str) -> float:
        return (marks[name]["end"] - marks[name]["start"]) / polls

    def peak_mib(name: str) -> float:
        return marks[name]["hwm"] / 1024

    sh = marks["loop"]
    sw_cpu, sm_cpu, aw_cpu = (cpu_per_poll(n) for n in ("spotwatch", "metrics", "all_aws"))
    sw_rss, sm_rss, aw_rss = (peak_mib(n) for n in ("spotwatch", "metrics", "all_aws"))
    sh_cpu = (sh["end"] - sh["start"]) / polls
    sh_rss = (sh["bash_hwm"] + curl_peak_kib(cleanup, sim.url, work)) / 1024
    sw_period = (marks["spotwatch"]["t_end"] - marks["spotwatch"]["t_start"]) / polls
    sh_period = (sh["t_end"] - sh["t_start"]) / polls

    table = Table(
        f"idle: {args.polls} polls after {args.warmup} warm-up polls, "
        f"--interval {args.interval:g} for all, IMDSv2"
    )

    def cpu_row(label: str, cpu: float, goal: float = GOAL_CPU_FRACTION) -> None:
        table.add(
            label,
            f"{cpu * 1000:.2f}",
            f"{sh_cpu * 1000:.2f}",
            ratio(cpu, sh_cpu),
            f"<= {goal:g} x baseline",
            cpu <= goal * sh_cpu,
        )

    def rss_row(label: str, rss: float) -> None:
        table.add(
            label,
            f"{rss:.1f}",
            f"{sh_rss:.1f}",
            ratio(rss, sh_rss),
            f"<= {GOAL_RSS_MIB:g} MiB",
            rss <= GOAL_RSS_MIB,
        )

    def boto_row(label: str, imported: list[str]) -> None:
        table.add(label, ", ".join(imported) if imported else "no", "-", "-", "no", not imported)

    cpu_row("CPU per poll (ms)", sw_cpu)
    rss_row("peak RSS (MiB)", sw_rss)
    boto_row("boto3/botocore imported", boto)
    cpu_row("CPU per poll, --metrics-file (ms)", sm_cpu)
    rss_row("peak RSS, --metrics-file (MiB)", sm_rss)
    cpu_row(
        "CPU per poll at --interval 5, --metrics-file (ms, est.)",
        sm_cpu + one_write * 5 / ROUTINE_WRITE_PERIOD,
    )
    table.add("one metrics file write (ms CPU)", f"{one_write * 1000:.3f}")
    if "prometheus_client" in marks:
        rss_row("peak RSS, prometheus_client imported (MiB)", peak_mib("prometheus_client"))
        table.add(
            "CPU per poll, prometheus_client imported (ms)",
            f"{cpu_per_poll('prometheus_client') * 1000:.2f}",
        )
    cpu_row("all AWS sources: CPU per poll (ms)", aw_cpu, GOAL_ALL_AWS_CPU_FRACTION)
    rss_row("all AWS sources: peak RSS (MiB)", aw_rss)
    boto_row("all AWS sources: boto3 imported", boto_all)
    cpu_row("Azure (--cloud azure): CPU per poll (ms)", cpu_per_poll("azure"))
    rss_row("Azure (--cloud azure): peak RSS (MiB)", peak_mib("azure"))
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
    cleanup: Cleanup,
    sim: ImdsSimulator,
    hooks_dir: Path,
    work: Path,
    polls: int = 3,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """Modules of FORBIDDEN packages imported by a short ``-X importtime`` run of the daemon.

    The only daemon polling ``sim`` while it runs (the measured ones are stopped).
    """
    counter = Counter(sim)
    before = counter.count("spotwatch/")
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


GOOGLE_INTERVAL = 5.0
GOOGLE_WARMUP = 10.0


def measure_google(seconds: float, cleanup: Cleanup) -> Table:
    """CPU per minute, idle, --interval 5: Google's watcher next to the AWS one."""
    from spotwatch.imdssim_gcp import GceSimulator

    aws = ImdsSimulator(require_token=True).start()
    cleanup.on_close(aws.stop)
    gce = GceSimulator()
    gce.start()
    cleanup.on_close(gce.stop)
    work = cleanup.tempdir("idle-google")
    hooks_dir = work / "hooks.d"
    hooks_dir.mkdir(mode=0o755)
    daemons: dict[str, Daemon] = {}
    for name, url in (("gcp", gce.url), ("aws", aws.url)):
        daemons[name] = Daemon(
            cleanup,
            url,
            interval=GOOGLE_INTERVAL,
            hooks_dir=hooks_dir,
            state_dir=work / f"state-{name}",
            log_path=work / f"{name}.log",
            extra=["--cloud", name],
        )
    for daemon in daemons.values():
        daemon.wait_for_event("watcher.started")
    time.sleep(GOOGLE_WARMUP)
    start = {name: cpu_seconds(d.pid) for name, d in daemons.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    per_minute = {
        name: (cpu_seconds(d.pid) - start[name]) * 60 / elapsed for name, d in daemons.items()
    }
    rss = {name: status_kib(d.pid, "VmHWM") / 1024 for name, d in daemons.items()}
    for daemon in daemons.values():
        daemon.proc.terminate()
        daemon.proc.wait(timeout=10)
    g, a = per_minute["gcp"], per_minute["aws"]
    table = Table(
        f"idle --cloud gcp: {elapsed:.0f} s after a {GOOGLE_WARMUP:g} s warm-up, --interval "
        f"{GOOGLE_INTERVAL:g}; baseline: spotwatch run on AWS (IMDSv2) beside it"
    )
    table.add(
        "CPU per minute (ms)", f"{g * 1000:.1f}", f"{a * 1000:.1f}", ratio(g, a),
        "<= baseline", g <= a,
    )  # fmt: skip
    table.add(
        "peak RSS (MiB)", f"{rss['gcp']:.1f}", f"{rss['aws']:.1f}", ratio(rss["gcp"], rss["aws"]),
        f"<= {GOAL_RSS_MIB:g} MiB", rss["gcp"] <= GOAL_RSS_MIB,
    )  # fmt: skip
    table.add(
        "metadata requests per minute",
        f"{len(gce.requests()) * 60 / (elapsed + GOOGLE_WARMUP):.1f}",
        f"{len(aws.requests()) * 60 / (elapsed + GOOGLE_WARMUP):.1f}",
    )
    return table


def main() -> int:
    args = parse_args()
    print(f"machine: {machine()}", flush=True)
    est = (args.warmup + args.polls) * (args.interval + 0.02)
    total = args.warmup + args.polls
    print(f"running the watchers side by side for {total} polls (~{est:.0f} s) ...", flush=True)
    with Cleanup() as cleanup:
        table = measure(args, cleanup)
    print(table.render())
    print(f"conditions at the end: {conditions()}")
    if args.google_seconds > 0:
        print(f"\nGoogle beside AWS, --interval 5, {args.google_seconds:g} s ...", flush=True)
        with Cleanup() as cleanup:
            print(measure_google(args.google_seconds, cleanup).render())
        print(f"conditions at the end: {conditions()}")
    return 0


if __name__ == "__main__":
    run_main(main)
