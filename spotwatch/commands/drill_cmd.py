"""Front end of ``spotwatch drill``: rehearse an interruption locally, no AWS needed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from spotwatch.clouds import registry
from spotwatch.config import DEFAULT_HOOKS_DIR, DEFAULT_RESUME_DIR, seconds, watch_list
from spotwatch.errors import SpotwatchError


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
            "timeline. Hooks see SPOTWATCH_DRILL=1. With --installed, the hooks run as the "
            "installed service would run them (its user, PATH and settings file), not with "
            "your shell's environment. Exit status 1 when a hook failed, "
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
        default=None,
        help="seconds from the notice to the interruption (default 120; with --cloud azure "
        "30, the least notice Azure gives a Spot eviction)",
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
        help="what to rehearse: the spot notice, a rebalance recommendation (AWS; on Azure "
        "a SpotRebalanceRecommendation), a scheduled maintenance event (AWS: --action "
        "terminate: instance-retirement, stop/hibernate: instance-stop; Google: "
        "maintenance-event; Azure: a Terminate event), Google's upcoming-maintenance (a "
        "window announced ahead, the hooks --lead s before it opens), an Auto Scaling "
        "termination (AWS), or a system shutdown with no notice (a poweroff at --in, "
        "--lead s standing for the unit's TimeoutStopSec) (default %(default)s)",
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
        "30 s to go), azure (a Preempt event --lead s ahead, then its approval), alibaba "
        "(a UTC reclaim time --lead s ahead, read with a token), tencent (a UTC+8 reclaim "
        "time --lead s ahead) (default %(default)s)",
    )
    add(
        "--installed",
        action="store_true",
        help="rehearse as the installed service runs: its unit's program, user, working "
        "directory, PATH and environment (Environment=, EnvironmentFile=), and the hooks "
        "directory, timeouts and sources of its settings file; flags given here still win",
    )
    add(
        "--root",
        metavar="DIR",
        help="with --installed: the installed files under DIR (as 'install --root DIR' "
        "wrote them) instead of /",
    )
    add(
        "--with-examples",
        action="store_true",
        help="rehearse the shipped action examples (deregister, the drains, ship, notify; "
        "with --resume their resume hooks) against stand-ins on 127.0.0.1: moto for AWS, a "
        "webhook receiver, recording kubectl/nomad/scontrol/aws/docker/systemctl; "
        "--hooks-dir and --resume-dir are not used. Needs moto[server]",
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
    if args.installed:
        from spotwatch.drill_installed import drill_installed

        root = Path(args.root) if args.root else None
        return drill_installed(root, _own_args(getattr(args, "argv", None)), as_json=args.json)
    if args.root:
        from spotwatch.errors import UsageError

        raise UsageError("--root goes with --installed (the installed files under DIR)")
    from spotwatch import logs
    from spotwatch.drill import DrillOptions, default_lead, render_json, render_text, run_drill

    logs.configure(None, args.log_level)
    options = DrillOptions(
        hooks_dir=Path(args.hooks_dir),
        notice_in=args.notice_in,
        lead=args.lead if args.lead is not None else default_lead(args.cloud, args.event),
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
    if not args.with_examples:
        report = run_drill(options)
        print(render_json(report) if args.json else render_text(report), file=sys.stdout)
        return 0 if report.ok else 1
    if args.cloud != "aws" or args.event == "shutdown":
        raise SpotwatchError("--with-examples rehearses the AWS examples: leave out --cloud "
                             "and --event shutdown", exit_code=2)  # fmt: skip
    from dataclasses import asdict

    from spotwatch.drill import report_as_dict
    from spotwatch.rehearsal import rehearse, render_seen

    report, seen = rehearse(options)
    if args.json:
        print(json.dumps({**report_as_dict(report), "stand_ins": asdict(seen)}, indent=2))
    else:
        print(render_text(report) + "\n" + render_seen(seen, report))
    return 0 if report.ok else 1


def _own_args(argv: list[str] | None) -> list[str]:
    """This drill's own flags as typed, less --installed and --root (the rehearsal
    under the service's settings gets them after its own, so they win)."""
    words = list(argv if argv is not None else sys.argv[1:])
    words = words[words.index("drill") + 1:] if "drill" in words else words
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--installed" or word.startswith("--root="):
            continue
        elif word == "--root":
            skip = True
        else:
            out.append(word)
    return out
