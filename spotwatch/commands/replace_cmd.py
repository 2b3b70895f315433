"""Front end of `spotwatch replace`: start the Auto Scaling replacement now."""

from __future__ import annotations

import argparse
import os
from typing import Any

from spotwatch.errors import SpotwatchError, UsageError


def add_parser(subparsers: Any) -> None:
    from spotwatch.replace import DETACH, METHODS

    parser = subparsers.add_parser(
        "replace",
        help="have the Auto Scaling group launch this instance's replacement now",
        description=(
            "From a hook: when this instance is in an Auto Scaling group, start its "
            "replacement now instead of after it is gone. The default method detaches "
            "it without lowering the desired capacity (the instance keeps running its "
            "hooks); 'unhealthy' has Auto Scaling terminate it. Never for a rebalance "
            "recommendation unless --on-rebalance; never twice for one instance. "
            "Exit status: 0 done or nothing to do, 1 the call failed, 2 bad input."
        ),
    )
    parser.add_argument("--method", choices=METHODS, default=DETACH,
                        help="detach (default, keeps this instance) or unhealthy")
    parser.add_argument("--on-rebalance", action="store_true",
                        help="also act on a rebalance recommendation")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the done mark lives (default: $SPOTWATCH_STATE_DIR)")
    parser.set_defaults(func=_main)  # fmt: skip


def _main(args: argparse.Namespace) -> int:
    from spotwatch import hook_context, replace
    from spotwatch.errors import aws_error_text
    from spotwatch.marks import Marks, MarksError

    context = hook_context.from_environment(os.environ)
    state_dir = args.state_dir or context.state_dir
    if not context.instance_id.startswith("i-"):
        raise UsageError(
            "no EC2 instance id: run it from a hook (SPOTWATCH_INSTANCE_ID) "
            "or set SPOTWATCH_INSTANCE_ID"
        )
    if context.resuming:
        print("replace: nothing to do when resuming")
        return 0
    if context.event == hook_context.REBALANCE and not args.on_rebalance:
        print("replace: a rebalance recommendation is a warning; no replacement "
              "(pass --on-rebalance to start one anyway)")
        return 0
    marks = Marks(state_dir)
    key = f"{replace.MARK_PREFIX}{context.instance_id}"
    try:
        done = marks.get(key)
    except MarksError as exc:
        raise SpotwatchError(f"{exc}: not replacing without the record that prevents a "
                             "second replacement") from None
    if done is not None:
        print(f"replace: already done for {context.instance_id} ({done.get('what', '')}); "
              "not again")
        return 0
    hook_context.keep_metadata_off_proxies()
    from botocore.exceptions import BotoCoreError, ClientError

    client = replace.make_client(hook_context.known_region(context))
    try:
        member = replace.membership(client, context.instance_id)
        reason = replace.why_not(member)
        if reason or member is None:
            print(f"replace: {reason}")
            return 0
        what = replace.start_replacement(client, context.instance_id, member, args.method)
    except (ClientError, BotoCoreError) as exc:
        raise SpotwatchError(
            "replace: " + replace.error_with_iam(aws_error_text(exc), args.method)
        ) from None
    try:
        marks.put(key, {"what": args.method, "group": member.group})
    except MarksError as exc:
        print(f"replace: done, but {exc}")
    print(f"replace: {what}")
    return 0
