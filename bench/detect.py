"""How soon spotwatch runs the first hook after the notice appears, next to a shell loop.

For each ``--interval`` (default 5 and 1), one long-running ``spotwatch run``
and one classic shell watcher (curl, compare with the last answer, run-parts
the hooks directory when it changed, sleep) watch the same IMDS simulator
(IMDSv2) side by side. ``--notices`` notices (default 30) are scheduled at
random moments, one after another, each with a fresh notice time a few seconds
ahead (so a fresh notice id), the next only once the last one's time has passed
(so the fold rule sees separate ends, not one; the daemon runs with
``--deadline-margin 0``); each watcher's only hook is ``#!/bin/sh`` + ``date +%s.%N >> FILE``.

Per notice and per watcher:

- detection = the hook's own timestamp - the moment the notice became visible
  (``appear_at`` given to the simulator). Goal: max <= interval + 0.1 s.
- dispatch = the hook's own timestamp - when the simulator received the GET
  that returned the notice to that watcher (told apart by User-Agent): the
  answer's trip back, parsing, logging, the journal writes (with fsync) and
  starting the hook. Goal: p95 <= 20 ms.

For spotwatch the dispatch is also split using its JSON log timestamps:
GET received -> ``notice.detected`` -> ``hook.started`` (logged just before
the spawn) -> the hook's first command.

Google and Azure rows (``--clouds``, default ``aws,gcp,azure``): ``spotwatch run
--cloud gcp --interval 5`` against the Google simulator, where ``instance/preempted``
turns TRUE at a random moment (goal: detection max <= 0.5 s, since hanging GETs
answer at once), and ``--cloud azure --interval 1`` against the Azure simulator,
where a ``Preempt`` event for this VM appears at a random moment (goal: max <= 1.1 s).
Each notice there gets a fresh daemon and state directory: the fold rule would
otherwise fold the next preemption into the last (one end of the instance, one run).
Detection = the hook's own timestamp - the moment the value changed or the event
became visible.

Usage: ``.venv/bin/python bench/detect.py [--notices 30] [--intervals 5,1]
[--clouds aws,gcp,azure]``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    BenchError,
    Cleanup,
    Daemon,
    Table,
    conditions,
    log_time,
    machine,
    median,
    need_tool,
    percentile,
    run_main,
    stop_process,
    wait_until,
    write_hook,
)

from spotwatch.imdssim import INSTANCE_ACTION_PATH, ImdsSimulator, format_time
from spotwatch.simserver import Record

GOAL_DETECT_SLACK = 0.1  # max detection <= interval + this
GOAL_DISPATCH_P95 = 0.020
SPOTWATCH_AGENT = "spotwatch/"
CURL_AGENT = "curl/"

SHELL_WATCHER = r"""
set -u
url=$1 interval=$2 hooks=$3
token=$(curl -s -m 1 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" \
    "$url/latest/api/token")
last=
while :; do
    body=$(curl -s -f -m 1 -H "X-aws-ec2-metadata-token: $token" \
        "$url/latest/meta-data/spot/instance-action")
    if [ -n "$body" ] && [ "$body" != "$last" ]; then
        last=$body
        run-parts "$hooks"
    fi
    sleep "$interval"
done
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Notice-to-first-hook latency of 'spotwatch run' next to a shell watcher.",
    )
    parser.add_argument(
        "--notices", type=int, default=30, help="notices per interval (default 30)"
    )
    parser.add_argument(
        "--intervals",
        default="5,1",
        help="comma-separated poll intervals in seconds (default 5,1)",
    )
    parser.add_argument("--seed", type=int, help="random seed for the notice moments")
    parser.add_argument(
        "--clouds", default="aws,gcp,azure", help="rows to measure (default aws,gcp,azure)"
    )
    args = parser.parse_args()
    args.cloud_list = [c.strip() for c in args.clouds.split(",") if c.strip()]
    if not set(args.cloud_list) <= {"aws", "gcp", "azure"}:
        parser.error(f"--clouds: expected some of aws,gcp,azure, got {args.clouds!r}")
    try:
        args.interval_list = [float(x) for x in args.intervals.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--intervals: expected numbers like 5,1, got {args.intervals!r}")
    if args.notices < 1 or not args.interval_list or min(args.interval_list) <= 0:
        parser.error("need --notices >= 1 and positive --intervals")
    return args


@dataclass
class Watcher:
    name: str
    agent: str
    record: Path
    hook_times: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)

    def lines(self) -> list[float]:
        if not self.record.exists():
            return []
        return [float(x) for x in self.record.read_text().split()]


@dataclass
class Figures:
    detection: list[float]
    dispatch: list[float]


def run_interval(
    interval: float, notices: int, rng: random.Random, cleanup: Cleanup
) -> tuple[Table, list[str]]:
    sim = ImdsSimulator(require_token=True).start()
    cleanup.on_close(sim.stop)
    work = cleanup.tempdir(f"detect-{interval:g}")
    watchers = {}
    for name, agent in (("spotwatch", SPOTWATCH_AGENT), ("shell", CURL_AGENT)):
        hooks = work / f"{name}-hooks.d"
        hooks.mkdir(mode=0o755)
        record = work / f"{name}.times"
        write_hook(hooks / "10-record", f'date +%s.%N >> "{record}"\n')
        watchers[name] = (Watcher(name, agent, record), hooks)

    daemon = Daemon(
        cleanup,
        sim.url,
        interval=interval,
        hooks_dir=watchers["spotwatch"][1],
        state_dir=work / "state",
        log_path=work / "daemon.log",
        # Each notice's time is only a few seconds ahead (see below): no margin.
        extra=("--deadline-margin", "0"),
    )
    daemon.wait_for_event("watcher.started")
    loop = cleanup.popen(
        ["bash", "-c", SHELL_WATCHER, "bash", sim.url, f"{interval:g}", str(watchers["shell"][1])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def polled(agent: str) -> bool:
        return any(
            r.headers.get("user-agent", "").startswith(agent)
            for r in sim.requests(INSTANCE_ACTION_PATH)
        )

    wait_until(lambda: polled(SPOTWATCH_AGENT) and polled(CURL_AGENT), 20, "first polls")

    appear: list[float] = []
    last_key = 0
    sw, sh = watchers["spotwatch"][0], watchers["shell"][0]
    for k in range(notices):
        # Each notice is a separate end of the instance: the next appears only after
        # the last one's time has passed, or the fold rule would fold it into the
        # last (no second run). So notice times are a few seconds ahead, not 120.
        time.sleep(max(0.0, last_key + 0.5 - time.time()))
        at = time.time() + rng.uniform(0.2, 0.2 + interval)  # a uniformly random poll phase
        # A fresh notice time (whole seconds, as IMDS gives it), so a fresh notice id;
        # still ahead when the slowest poll sees it, so it is the deadline.
        last_key = max(int(at + interval) + 3, last_key + 1)
        sim.schedule_notice("terminate", appear_at=at, notice_time=format_time(last_key))
        appear.append(at)

        def both_ran(n: int = k + 1) -> bool:
            if daemon.proc.poll() is not None or loop.poll() is not None:
                raise BenchError(f"a watcher exited; see {daemon.log_path}")
            return len(sw.lines()) >= n and len(sh.lines()) >= n

        wait_until(both_ran, 2 * interval + 15, f"both watchers' hooks for notice {k + 1}")
        sim.clear_notice()
        if sys.stderr.isatty():
            print(f"  --interval {interval:g}: notice {k + 1}/{notices}", end="\r", file=sys.stderr)
    if sys.stderr.isatty():
        print(" " * 60, end="\r", file=sys.stderr)

    # Let the daemon finish logging the last notice before reading its log.
    daemon.wait_for_event("notice.handled", count=notices)
    detected = [log_time(e) for e in daemon.events("notice.detected")]
    started = [log_time(e) for e in daemon.events("hook.started")]
    if len(detected) != notices or len(started) != notices:
        raise BenchError(
            f"expected {notices} notices and hook starts in the log, got "
            f"{len(detected)} and {len(started)}; see {daemon.log_path}"
        )

    requests = sim.requests(INSTANCE_ACTION_PATH)
    figures = {}
    for watcher in (sw, sh):
        hook_times = watcher.lines()
        if len(hook_times) != notices:
            raise BenchError(f"{watcher.name}'s hook ran {len(hook_times)} times, not {notices}")
        served = first_served(requests, watcher.agent, appear)
        watcher.hook_times, watcher.served = hook_times, served
        figures[watcher.name] = Figures(
            detection=[h - a for h, a in zip(hook_times, appear)],
            dispatch=[h - s for h, s in zip(hook_times, served)],
        )

    table = Table(
        f"detect: {notices} notices at random moments, --interval {interval:g}, "
        "spotwatch run vs a curl/run-parts shell loop (times in ms)"
    )
    ours, theirs = figures["spotwatch"], figures["shell"]
    goal_max = interval + GOAL_DETECT_SLACK
    for label, pick, goal in (
        ("detection median", lambda v: median(v), None),
        ("detection p95", lambda v: percentile(v, 95), None),
        ("detection max", lambda v: max(v), goal_max),
    ):
        a, b = pick(ours.detection), pick(theirs.detection)
        table.add(
            label,
            ms(a),
            ms(b),
            f"{a / b:.2f}",
            f"<= {ms(goal_max)}" if goal is not None else "-",
            (a <= goal) if goal is not None else None,
        )
    for label, pick, goal in (
        ("dispatch median", lambda v: median(v), None),
        ("dispatch p95", lambda v: percentile(v, 95), GOAL_DISPATCH_P95),
        ("dispatch max", lambda v: max(v), None),
    ):
        a, b = pick(ours.dispatch), pick(theirs.dispatch)
        table.add(
            label,
            ms(a, 1),
            ms(b, 1),
            f"{a / b:.2f}",
            f"<= {ms(goal, 0)}" if goal is not None else "-",
            (a <= goal) if goal is not None else None,
        )

    # Where spotwatch's dispatch goes, from its own log timestamps.
    parts = [
        ("GET -> notice.detected", [d - s for d, s in zip(detected, sw.served)]),
        ("notice.detected -> hook.started", [h - d for h, d in zip(started, detected)]),
        ("hook.started -> hook's 1st command", [t - h for t, h in zip(sw.hook_times, started)]),
    ]
    breakdown = [
        f"  spotwatch dispatch, {name}: median {ms(median(v), 1)} ms, "
        f"p95 {ms(percentile(v, 95), 1)} ms, max {ms(max(v), 1)} ms"
        for name, v in parts
    ]
    return table, breakdown


def first_served(
    requests: Sequence[Record], agent: str, appear: Sequence[float]
) -> list[float]:
    """For each notice, when the first GET by ``agent`` that got it (a 200) was received."""
    out = []
    ends = [*appear[1:], float("inf")]
    for start, end in zip(appear, ends):
        hits = [
            r.wall_time
            for r in requests
            if r.status == 200
            and r.headers.get("user-agent", "").startswith(agent)
            and start <= r.wall_time < end
        ]
        if not hits:
            raise BenchError(f"no GET by {agent} saw the notice that appeared at {start:.3f}")
        out.append(min(hits))
    return out


# Google: --interval 5, where hanging GETs make the interval irrelevant to detection.
# Azure: --interval 1, Microsoft's recommended poll.
CLOUD_ROWS = {"gcp": (5.0, 0.5), "azure": (1.0, 1.1)}  # cloud -> (interval, goal max s)


def run_cloud(cloud: str, notices: int, rng: random.Random, cleanup: Cleanup) -> Table:
    """Detection on Google or Azure: a fresh daemon per notice (see the docstring)."""
    from spotwatch.imdssim_azure import AzureSimulator
    from spotwatch.imdssim_gcp import BASE_PATH, PREEMPTED, GceSimulator

    interval, goal = CLOUD_ROWS[cloud]
    sim: GceSimulator | AzureSimulator = GceSimulator() if cloud == "gcp" else AzureSimulator()
    sim.start()
    cleanup.on_close(sim.stop)
    work = cleanup.tempdir(f"detect-{cloud}")
    hooks = work / "hooks.d"
    hooks.mkdir(mode=0o755)
    record = work / "times"
    write_hook(hooks / "10-record", f'date +%s.%N >> "{record}"\n')
    detection: list[float] = []
    for k in range(notices):
        before = sim.arrived(BASE_PATH + PREEMPTED)
        daemon = Daemon(
            cleanup, sim.url, interval=interval, hooks_dir=hooks, state_dir=work / f"state-{k}",
            log_path=work / f"daemon-{k}.log", extra=["--cloud", cloud],
        )  # fmt: skip
        daemon.wait_for_event("watcher.started")
        if isinstance(sim, GceSimulator):
            path = BASE_PATH + PREEMPTED
            # The first read, then the hanging GET it waits in.
            wait_until(lambda p=path, b=before: sim.arrived(p) >= b + 2, 20, "the hanging GET")
        else:
            daemon.wait_for_event("azure.events_started")
        at = time.time() + rng.uniform(0.2, 0.2 + interval)  # a uniformly random poll phase
        if isinstance(sim, GceSimulator):
            sim.schedule(PREEMPTED, "TRUE", at)
        else:
            event_id = sim.add_event("Preempt", at=at, lead=60)
        wait_until(lambda n=k + 1: len(read_times(record)) >= n, interval + 20, f"notice {k + 1}")
        if isinstance(sim, GceSimulator):
            changed = sim.changed_at(PREEMPTED)
            assert changed is not None
            at = changed  # when the value really changed (the timer's own latency excluded)
        detection.append(read_times(record)[k] - at)
        stop_process(daemon.proc)
        if isinstance(sim, GceSimulator):
            sim.set_value(PREEMPTED, "FALSE")
        else:
            sim.remove_event(event_id)
        if sys.stderr.isatty():
            print(f"  --cloud {cloud}: notice {k + 1}/{notices}", end="\r", file=sys.stderr)
    if sys.stderr.isatty():
        print(" " * 60, end="\r", file=sys.stderr)
    what = "instance/preempted -> TRUE" if cloud == "gcp" else "a Preempt event for this VM"
    table = Table(
        f"detect --cloud {cloud}: {notices} x {what} at random moments, --interval "
        f"{interval:g} (times in ms; each notice a fresh daemon)"
    )
    table.add("detection median", ms(median(detection)))
    table.add("detection p95", ms(percentile(detection, 95)))
    table.add(
        "detection max", ms(max(detection)), goal=f"<= {ms(goal)}", met=max(detection) <= goal
    )
    return table


def read_times(record: Path) -> list[float]:
    return [float(x) for x in record.read_text().split()] if record.exists() else []


def ms(seconds: float, digits: int = 0) -> str:
    return f"{seconds * 1000:.{digits}f}"


def main() -> int:
    args = parse_args()
    need_tool("curl", "curl")
    need_tool("run-parts", "debianutils")
    need_tool("bash", "bash")
    rng = random.Random(args.seed)
    print(f"machine: {machine()}", flush=True)
    # Per notice: a random phase (interval / 2 on average), then its notice time
    # (about interval + 3 s ahead) must pass before the next one.
    est = sum(args.notices * (1.5 * i + 4) for i in args.interval_list)
    print(f"{args.notices} notices per interval, ~{est:.0f} s in all ...", flush=True)
    for cloud in args.cloud_list:
        if cloud == "aws":
            continue
        with Cleanup() as cleanup:
            print(run_cloud(cloud, args.notices, rng, cleanup).render())
        print(f"conditions: {conditions()}")
        print()
    for interval in args.interval_list if "aws" in args.cloud_list else []:
        with Cleanup() as cleanup:
            table, breakdown = run_interval(interval, args.notices, rng, cleanup)
        print(table.render())
        print("\n".join(breakdown))
        print(f"conditions: {conditions()}")
        print()
    return 0


if __name__ == "__main__":
    run_main(main)
