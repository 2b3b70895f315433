"""Front end of `spotwatch deregister`: take the instance out of its load balancers."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from spotwatch.errors import UsageError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deregister",
        help="take this instance out of its ELB target groups and Classic load balancers",
        description=(
            "From a hook: deregister this instance from every target group and Classic "
            "load balancer it is in (those given, those attached to its Auto Scaling "
            "group, else a bounded scan), then wait for the draining until the deadline. "
            "--restore (in a resume hook) registers it again where it was. "
            "Exit status: 0 done, 1 some API call failed, 2 bad input."
        ),
    )
    parser.add_argument("--target-group", action="append", default=[], metavar="ARN",
                        help="a target group to leave (also $SPOTWATCH_TARGET_GROUPS)")
    parser.add_argument("--load-balancer", action="append", default=[], metavar="NAME",
                        help="a Classic load balancer to leave (also $SPOTWATCH_CLASSIC_LBS)")
    parser.add_argument("--scan-limit", type=int, default=200, metavar="N",
                        help="look at no more than N of each when scanning (default 200)")
    parser.add_argument("--no-wait", dest="wait", action="store_false",
                        help="do not wait for the draining")
    parser.add_argument("--restore", action="store_true",
                        help="register the instance again where a deregister took it out")
    parser.add_argument("--on-rebalance", action="store_true",
                        help="also act on a rebalance recommendation")
    parser.add_argument("--deadline", metavar="EPOCH",
                        help="stop waiting by then (default: from the hook's environment)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the record for --restore lives (default: $SPOTWATCH_STATE_DIR)")
    parser.set_defaults(func=_main)  # fmt: skip


def _main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from spotwatch import deregister, hook_context
    from spotwatch.errors import aws_error_text
    from spotwatch.marks import Marks, MarksError

    env = os.environ
    context = hook_context.from_environment(env, deadline=args.deadline)
    if args.state_dir:
        context = replace(context, state_dir=args.state_dir)
    if not 1 <= args.scan_limit <= 10000:
        raise UsageError(f"--scan-limit must be between 1 and 10000, not {args.scan_limit}")
    if not context.instance_id.startswith("i-"):
        raise UsageError(
            "no EC2 instance id: run it from a hook (SPOTWATCH_INSTANCE_ID) "
            "or set SPOTWATCH_INSTANCE_ID"
        )
    groups = args.target_group + env.get("SPOTWATCH_TARGET_GROUPS", "").replace(",", " ").split()
    for arn in groups:
        if not arn.startswith("arn:") or ":targetgroup/" not in arn:
            raise UsageError(f"--target-group takes a target group ARN, not {arn!r}")
    classic = args.load_balancer + env.get("SPOTWATCH_CLASSIC_LBS", "").replace(",", " ").split()
    marks = Marks(context.state_dir)
    key = f"{deregister.MARK_PREFIX}{context.instance_id}"

    if context.resuming and not args.restore:
        print("deregister: this is a resume hook: pass --restore to register the instance again")
        return 0
    if context.event == hook_context.REBALANCE and not args.on_rebalance and not args.restore:
        print("deregister: a rebalance recommendation is a warning; staying in the load "
              "balancers (pass --on-rebalance to leave them)")
        return 0

    hook_context.keep_metadata_off_proxies()
    clients = deregister.make_clients(context)
    if args.restore:
        try:
            saved = marks.get(key) or {}
        except MarksError as exc:
            raise UsageError(f"{exc}: nothing to restore from") from None
        report = deregister.restore(clients, context.instance_id, saved, aws_error_text)
        if not report.failed:
            try:
                marks.put(key, {"targets": [], "classic": [], "restored": True})
            except MarksError as exc:
                print(f"deregister: {exc}", file=sys.stderr)
    else:
        now = hook_context.now()
        report = deregister.deregister(
            clients, context,
            deregister.Named(target_groups=groups, classic=classic, scan_limit=args.scan_limit),
            act_by=context.act_by(now, reserve=hook_context.reserve_after(env)), wait=args.wait,
            error_text=aws_error_text,
        )  # fmt: skip
        if report.targets or report.classic:
            try:
                previous = marks.get(key) or {}
                record = deregister.saved_record(report)
                # A second run (a restart) finds nothing left to take out: keep the first's.
                for name in ("targets", "classic"):
                    record[name] += [x for x in previous.get(name, []) if x not in record[name]]
                marks.put(key, record)
            except MarksError as exc:
                print(f"deregister: {exc}: --restore will not know where to go back",
                      file=sys.stderr)
    for line in report.lines:
        print(line)
    return 1 if report.failed else 0
