"""Front end of ``spotwatch drill``: rehearse an interruption locally, no AWS needed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from spotwatch.clouds import registry
from spotwatch.config import DEFAULT_HOOKS_DIR, DEFAULT_RESUME_DIR, seconds, watch_list


def _seconds(text: str) -> float:
    try:
        return seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _margin(text: str) -> float:
    try:
        return seconds(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _watch(text: str) -> tuple[str, ...]:
    try:
        return watch_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drill",
        help="rehearse an interruption locally with your real hooks (no AWS needed)",
        description=(
            "Start an IMDS simulator on 127.0.0.1, run the real watcher against it with "
            "the hooks in --hooks-dir, send a spot interruption notice and print the "
            "timeline. Hooks see SPOTWATCH_DRILL=1. Exit status 1 when a hook failed, "
            "timed out, or the deadline would have been missed."
        ),
    )
    add = parser.add_argument
    add(
        "--hooks-dir",
        metavar="DIR",
        default=os.environ.get("SPOTWATCH_HOOKS_DIR", DEFAULT_HOOKS_DIR),
        help="hooks to rehearse (default $SPOTWATCH_HOOKS_DIR or %(default)s)",
    )
    add(
        "--in",
        dest="notice_in",
        metavar="S",
        type=_margin,
        default=2.0,
        help="seconds until the notice appears (default %(default)g)",
    )
    add(
        "--lead",
        metavar="S",
        type=_seconds,
        default=120.0,
        help="seconds from the notice to the interruption (default %(default)g)",
    )
    add(
        "--action",
        choices=("terminate", "stop", "hibernate"),
        default="terminate",
        help="the notice's action (default %(default)s)",
    )
    add(
        "--interval",
        metavar="S",
        type=_seconds,
        default=1.0,
        help="poll interval; the daemon's default is 5 (default here %(default)g)",
    )
    add(
        "--hook-timeout",
        metavar="S",
        type=_seconds,
        default=60.0,
        help="longest one hook may run (default %(default)g)",
    )
    add(
        "--deadline-margin",
        metavar="S",
        type=_margin,
        default=10.0,
        help="hooks must end this long before the interruption (default %(default)g)",
    )
    add(
        "--event",
        choices=("spot", "rebalance", "maintenance", "upcoming-maintenance", "asg", "shutdown"),
        default="spot",
        help="what to rehearse: the spot notice, a rebalance recommendation (AWS, Azure), a "
        "scheduled maintenance event (--action terminate: instance-retirement, stop/hibernate: "
        "instance-stop), Google's upcoming maintenance (a window --lead s after the notice), "
        "an Auto Scaling termination, or a system shutdown with no "
        "notice (a poweroff at --in, --lead s standing for the unit's TimeoutStopSec) "
        "(default %(default)s)",
    )
    add(
        "--resume",
        action="store_true",
        help="then rehearse the way back: the resume hooks, as when the end did not come",
    )
    add(
        "--resume-dir",
        metavar="DIR",
        default=os.environ.get("SPOTWATCH_RESUME_DIR") or DEFAULT_RESUME_DIR,
        help="resume hooks for --resume (default $SPOTWATCH_RESUME_DIR or %(default)s)",
    )
    add(
        "--watch",
        metavar="LIST",
        type=_watch,
        default=(),
        help="sources the watcher watches, as for 'spotwatch run' (the event's is added)",
    )
    add(
        "--cloud",
        choices=registry.NAMES,
        default="aws",
        help="the metadata protocol to rehearse: aws (spot notice), gcp (preempted=TRUE, "
        "30 s to go), azure (a Preempt event --lead s ahead, then its approval) "
        "(default %(default)s)",
    )
    add("--json", action="store_true", help="print the timeline as JSON")
    add(
        "--log-level",
        default="error",
        choices=("debug", "info", "warning", "error"),
        help="daemon log events on stderr at this level and above (default %(default)s)",
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from spotwatch import logs
    from spotwatch.drill import DrillOptions, render_json, render_text, run_drill

    logs.configure(None, args.log_level)
    report = run_drill(
        DrillOptions(
            hooks_dir=Path(args.hooks_dir),
            notice_in=args.notice_in,
            lead=args.lead,
            action=args.action,
            interval=args.interval,
            hook_timeout=args.hook_timeout,
            deadline_margin=args.deadline_margin,
            event=args.event,
            watch=args.watch,
            cloud=args.cloud,
            resume=args.resume,
            resume_dir=Path(args.resume_dir),
        )
    )
    print(render_json(report) if args.json else render_text(report), file=sys.stdout)
    return 0 if report.ok else 1
