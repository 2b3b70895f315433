"""spotwatch's hook runner next to Debian's run-parts on the same 100 trivial hooks.

Both run the same directory of ``--hooks`` scripts (``#!/bin/sh`` + ``exit 0``,
named h000, h001, ... so run-parts' default name rule accepts them too), one
at a time, in the same run, alternating which goes first, ``--repeat`` times.
The two rows with no goal are measured in a second phase, next to run-parts
again: the journal's fsyncs leave the disk busy for a moment, and whatever ran
right after them would pay for it.

- run-parts: ``run-parts DIR`` as a process, timed from the benchmark (its own
  exec included).
- spotwatch: ``plan_hooks(DIR)`` then ``run_hooks(plan.hooks, env, ...)`` in
  this process: the directory scan and safety rules, a safety re-check of each
  file just before it runs, a spawn with stdout/stderr pipes in its own
  session, reading the pipes until the hook exits, and the ``hook.started`` /
  ``hook.finished`` log lines (JSON, written to /dev/null). Not included: the
  Python start-up of the daemon (it is already running when a notice comes).
- spotwatch + journal (for information, no goal): the same, plus the journal
  writes the daemon makes around each hook (begin, hook started, hook finished,
  complete; atomic writes, with fsync where the journal makes them durable) in
  a fresh state directory each run.
- run-parts --report (for information, no goal): run-parts reading each hook's
  output through pipes, as spotwatch always does (plain run-parts does not).

Also shown, for information: the CPU time of all processes involved (this
process or run-parts, plus the hooks), which a busy machine disturbs less.

The ratio is the median of per-pair ratios: each spotwatch run divided by the
run-parts run next to it (the pair's order alternates). On this shared 2-CPU
VM the machine's speed drifts from second to second; a pair shares the
drift, so the paired ratio is steadier than the quotient of the two medians.
Measured with 310 pairs of this benchmark cut into windows: over windows of
15 pairs, the quotient of medians ranged 1.05-1.31 and the paired ratio
1.10-1.19; over windows of 31 pairs, 1.08-1.18 and 1.13-1.17. Hence 31 pairs
by default. The wall times shown are the medians of each column.

Usage: ``.venv/bin/python bench/hooks.py [--hooks 100] [--repeat 31]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from _common import (
    BenchError,
    Cleanup,
    Table,
    conditions,
    machine,
    median,
    need_tool,
    ratio,
    run_main,
    write_hook,
)

from spotwatch import logs
from spotwatch.hooks import plan_hooks
from spotwatch.journal import Journal
from spotwatch.notice import SPOT_INTERRUPTION, Notice
from spotwatch.runner import HookResult, HookSettings, RunObserver, run_hooks

GOAL_RATIO = 1.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Wall time of spotwatch's hook runner next to run-parts, same hooks.",
    )
    parser.add_argument("--hooks", type=int, default=100, help="number of hooks (default 100)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=31,
        help="runs of each, in pairs; medians are shown (default 31)",
    )
    parser.add_argument(
        "--body",
        default="exit 0",
        help="shell body of every hook (default 'exit 0'; e.g. 'sleep 0.01' for a hook that works)",
    )
    args = parser.parse_args()
    if args.hooks < 1 or args.hooks > 1000 or args.repeat < 1:
        parser.error("need 1 <= --hooks <= 1000 and --repeat >= 1")
    return args


def time_run_parts(run_parts: str, hooks_dir: Path, *options: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [run_parts, *options, str(hooks_dir)], stdin=subprocess.DEVNULL, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"run-parts exited {done.returncode}")
    return elapsed


def time_spotwatch(hooks_dir: Path, count: int, state_dir: Path | None, n: int) -> float:
    env = dict(os.environ)
    # A fresh journal each time, as the daemon has for a new notice (few entries).
    journal = Journal(state_dir / f"run{n}") if state_dir is not None else None
    kwargs: dict[str, Any] = {}
    notice = Notice(SPOT_INTERRUPTION, "terminate", "", None, time.time() + 120, f"bench{n}", "")
    if journal is not None:
        j = journal

        def on_start(hook: Any) -> None:
            j.hook_started(notice.id, hook.name)

        def on_finish(result: HookResult) -> None:
            j.hook_finished(notice.id, result)

        kwargs = {"observer": RunObserver(on_start=on_start, on_finish=on_finish)}
    start = time.perf_counter()
    plan = plan_hooks(hooks_dir)
    if journal is not None:
        journal.begin(notice)
    results = run_hooks(plan.hooks, env, HookSettings(hook_timeout=60.0), **kwargs)
    if journal is not None:
        journal.complete(notice.id)
    elapsed = time.perf_counter() - start
    bad = [r.description for r in results if not r.ok]
    if len(results) != count or bad:
        raise BenchError(f"spotwatch ran {len(results)} of {count} hooks; failures: {bad[:3]}")
    return elapsed


def paired_ratio(ours: list[float], baseline: list[float]) -> float:
    """Median of ours[n] / baseline[n]: runs n of both were measured one after the other."""
    return median([a / b for a, b in zip(ours, baseline)])


def cpu_now() -> float:
    """CPU seconds of this process and of its reaped children (hooks, run-parts) so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(args: argparse.Namespace, cleanup: Cleanup) -> Table:
    run_parts = need_tool("run-parts", "debianutils")
    work = cleanup.tempdir("hooks")
    hooks_dir = work / "hooks.d"
    hooks_dir.mkdir(mode=0o755)
    for i in range(args.hooks):
        write_hook(hooks_dir / f"h{i:03d}", args.body + "\n")
    listed = subprocess.run(
        [run_parts, "--test", str(hooks_dir)], capture_output=True, text=True, check=False
    ).stdout.split()
    planned = plan_hooks(hooks_dir).hooks
    if len(listed) != args.hooks or len(planned) != args.hooks:
        raise BenchError(
            f"run-parts would run {len(listed)} and spotwatch {len(planned)} of {args.hooks} hooks"
        )
    devnull = cleanup.open(Path(os.devnull), "w")
    logs.configure("json", "info", stream=devnull)
    state = work / "state"

    goal_pair: list[tuple[str, Callable[[int], float]]] = [
        ("run-parts", lambda n: time_run_parts(run_parts, hooks_dir)),
        ("spotwatch", lambda n: time_spotwatch(hooks_dir, args.hooks, None, n)),
    ]
    # For information, in a second phase with a baseline of its own: the journal's
    # fsyncs leave the disk busy, which would slow whatever ran right after them.
    informative: list[tuple[str, Callable[[int], float]]] = [
        ("run-parts 2", lambda n: time_run_parts(run_parts, hooks_dir)),
        ("journal", lambda n: time_spotwatch(hooks_dir, args.hooks, state, n)),
        ("report", lambda n: time_run_parts(run_parts, hooks_dir, "--report")),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in goal_pair + informative}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    for _, run in goal_pair:
        run(-1)  # warm the page cache and this process for both
    for runners in (goal_pair, informative):
        for n in range(args.repeat):
            order = runners if n % 2 == 0 else list(reversed(runners))
            for name, run in order:
                before = cpu_now()
                times[name].append(run(n))
                cpu[name].append(cpu_now() - before)

    rp, sw = median(times["run-parts"]), median(times["spotwatch"])
    rp2, sj, rr = (median(times[k]) for k in ("run-parts 2", "journal", "report"))
    goal_ratio = paired_ratio(times["spotwatch"], times["run-parts"])
    table = Table(
        f"hooks: {args.hooks} #!/bin/sh hooks doing {args.body!r}, {args.repeat} runs each in "
        "pairs; wall time in ms (median), ratio = median of the per-pair ratios"
    )
    table.add(
        "runner API (plan + run)",
        f"{sw * 1000:.0f}",
        f"{rp * 1000:.0f}",
        f"{goal_ratio:.2f}",
        f"<= {GOAL_RATIO:g} x run-parts",
        goal_ratio <= GOAL_RATIO,
    )
    table.add(
        "runner API + journal",
        f"{sj * 1000:.0f}",
        f"{rp2 * 1000:.0f}",
        f"{paired_ratio(times['journal'], times['run-parts 2']):.2f}",
    )
    table.add(
        "run-parts --report",
        f"{rr * 1000:.0f}",
        f"{rp2 * 1000:.0f}",
        f"{paired_ratio(times['report'], times['run-parts 2']):.2f}",
    )
    cpu_sw, cpu_rp = median(cpu["spotwatch"]), median(cpu["run-parts"])
    table.add(
        "CPU, all processes (runner API)",
        f"{cpu_sw * 1000:.0f}",
        f"{cpu_rp * 1000:.0f}",
        f"{paired_ratio(cpu['spotwatch'], cpu['run-parts']):.2f}",
    )
    per_sw, per_rp = sw / args.hooks, rp / args.hooks
    table.add("per hook (runner API)", f"{per_sw * 1000:.2f}", f"{per_rp * 1000:.2f}")
    fast_sw, fast_rp = min(times["spotwatch"]), min(times["run-parts"])
    table.add(
        "fastest run (runner API)",
        f"{fast_sw * 1000:.0f}",
        f"{fast_rp * 1000:.0f}",
        ratio(fast_sw, fast_rp),
    )
    return table


def main() -> int:
    args = parse_args()
    # As the daemon runs: `spotwatch run` moves to / at start, where the runner
    # starts hooks with posix_spawn (elsewhere it falls back to subprocess.Popen).
    os.chdir("/")
    print(f"machine: {machine()}", flush=True)
    with Cleanup() as cleanup:
        table = measure(args, cleanup)
    print(table.render())
    print(f"conditions at the end: {conditions()}")
    return 0


if __name__ == "__main__":
    run_main(main)
