"""Front end of `spotwatch notify`: destinations and hook environment in, one line each out."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from spotwatch.errors import UsageError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "notify",
        help="tell people and systems the instance is ending (webhook, Slack, SNS, "
        "EventBridge, EC2 tag)",
        description=(
            "Send one message per end of the instance to each destination, from a hook: "
            "the notice comes from the hook's SPOTWATCH_* environment. Retries within "
            "the deadline; a mark in the state directory keeps a restart from sending "
            "twice. Without destination flags the settings (SPOTWATCH_NOTIFY_*) apply. "
            "Exit status: 0 all sent (or sent before), 1 some not, 2 bad input."
        ),
    )
    parser.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="POST the notice as JSON (the template, or every field)")
    parser.add_argument("--slack", action="append", default=[], metavar="URL",
                        help='Slack-compatible incoming webhook ({"text": ...})')
    parser.add_argument("--sns-topic", action="append", default=[], metavar="ARN",
                        help="publish to this SNS topic")
    parser.add_argument("--event-bus", action="append", default=[], metavar="NAME",
                        help="put a 'spotwatch Instance Ending' event on this EventBridge bus")
    parser.add_argument("--tag", action="store_true",
                        help="tag the instance spotwatch:ending=<event>@<time>")
    parser.add_argument("--template", metavar="FILE",
                        help="JSON with {{field}} placeholders ($SPOTWATCH_NOTIFY_TEMPLATE)")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra HTTP header for webhooks (also SPOTWATCH_NOTIFY_HEADER_*)")
    parser.add_argument("--on-rebalance", action="store_true",
                        help="also send for a rebalance recommendation")
    parser.add_argument("--deadline", metavar="EPOCH",
                        help="give up by then (default: from the hook's environment)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the sent marks live (default: $SPOTWATCH_STATE_DIR)")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the record (or the filled-in template); send nothing")
    parser.set_defaults(func=_main)  # fmt: skip


def _main(args: argparse.Namespace) -> int:
    from spotwatch import hook_context, notify
    from spotwatch.marks import Marks

    env = os.environ
    context = hook_context.from_environment(env, deadline=args.deadline)
    if args.state_dir:
        from dataclasses import replace

        context = replace(context, state_dir=args.state_dir)
    destinations = notify.destinations_from(
        {notify.WEBHOOK: args.webhook, notify.SLACK: args.slack,
         notify.SNS: args.sns_topic, notify.EVENTBRIDGE: args.event_bus},
        args.tag, env,
    )  # fmt: skip
    template_path = args.template or env.get("SPOTWATCH_NOTIFY_TEMPLATE", "").strip()
    template = None
    if template_path:
        try:
            text = Path(template_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the template {template_path}: {exc}") from None
        template = notify.parse_template(text, template_path)
    headers = notify.headers_from_settings(env) + [notify.parse_header(h) for h in args.header]
    timeout = notify.ATTEMPT_TIMEOUT
    if env.get("SPOTWATCH_WEBHOOK_TIMEOUT", "").strip():
        try:
            timeout = float(env["SPOTWATCH_WEBHOOK_TIMEOUT"])
        except ValueError:
            raise UsageError("SPOTWATCH_WEBHOOK_TIMEOUT must be seconds") from None
        if not 0 < timeout <= 300:
            raise UsageError("SPOTWATCH_WEBHOOK_TIMEOUT must be between 0 and 300 seconds")
    on_rebalance = args.on_rebalance or env.get(
        "SPOTWATCH_NOTIFY_ON_REBALANCE", ""
    ).strip().lower() in ("1", "true", "yes")
    settings = notify.Settings(
        destinations=destinations,
        template=template,
        headers=tuple(headers),
        on_rebalance=on_rebalance,
        attempt_timeout=timeout,
    )
    now = hook_context.now()
    left = notify.seconds_left(context, now, env)
    values = notify.record(
        context, now=now, left=left, hostname=notify.hostname(),
        message_id=notify.message_id(context),
    )  # fmt: skip
    if args.print_only:
        body = notify.render(template, values) if template is not None else values
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return 0
    reason = notify.skip_reason(context, settings)
    if reason:
        print(f"notify: {reason}")
        return 0
    hook_context.keep_metadata_off_proxies()
    outcomes = notify.send_all(
        context, settings, values,
        act_by=context.act_by(now), marks=Marks(context.state_dir),
        senders=notify.Senders(context, settings),
        warn=lambda text: print(text, file=sys.stderr),
    )  # fmt: skip
    failed = 0
    for outcome in outcomes:
        stream = sys.stdout if outcome.status != "failed" else sys.stderr
        print(outcome.line(), file=stream)
        failed += outcome.status == "failed"
    sys.stdout.flush()
    sys.stderr.flush()
    if failed:
        # A request still running on its thread must not hold the hook past its time.
        os._exit(1)
    return 0
