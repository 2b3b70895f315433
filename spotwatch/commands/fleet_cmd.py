"""Front end of `spotwatch fleet setup` and `spotwatch fleet watch`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from spotwatch.config import LOG_FORMATS, LOG_LEVELS
from spotwatch.errors import EXIT_USAGE, UsageError

QUEUE_URL_ENV = "SPOTWATCH_QUEUE_URL"
METRICS_FILE_ENV = "SPOTWATCH_METRICS_FILE"
WORKERS_ENV = "SPOTWATCH_FLEET_WORKERS"
DEFAULT_WORKERS = 16


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="watch interruptions across a fleet through EventBridge and SQS",
        description="Fleet-wide: EventBridge sends every instance's EC2 events to one SQS "
        "queue; 'setup' creates it, 'watch' consumes it and runs the fleet hooks.",
    )
    from spotwatch.cli import Parser

    commands = parser.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND",
                                     parser_class=Parser)

    setup = commands.add_parser(
        "setup",
        help="create the queue, dead-letter queue, EventBridge rule and policy (idempotent)",
        description="Create, or bring in line, the SQS queue NAME, its dead-letter queue "
        "NAME-dlq, the EventBridge rule NAME on the default bus and its target. "
        "Prints the queue URL. Running it again changes nothing.",
    )
    setup.add_argument("--queue-name", required=True, metavar="NAME",
                       help="the queue NAME, its dead-letter queue NAME-dlq and the "
                       "EventBridge rule NAME (created, or brought back in line)")
    setup.add_argument("--region", metavar="R",
                       help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, the AWS "
                       "profile, then on EC2 the instance's own region)")
    setup.add_argument("--visibility-timeout", type=_int_arg, default=60, metavar="S",
                       help="seconds a received message stays hidden (default 60)")
    setup.add_argument("--max-receive-count", type=_int_arg, default=5, metavar="N",
                       help="receives before a message goes to the dead-letter queue (default 5)")
    _log_args(setup)
    setup.set_defaults(func=_setup, error_prefix="spotwatch fleet setup")

    watch = commands.add_parser(
        "watch",
        help="consume the queue: print each event and run the fleet hooks",
        description="Long-poll the queue, print one line per EC2 event and run the hooks "
        "in --hooks-dir with the event in the environment. A message is deleted only once "
        "its hooks succeeded. Up to --workers events run at once. On SIGTERM: receives no more, "
        "hands back what did not start, lets running hooks finish.",
    )
    watch.add_argument("--queue-url", metavar="URL",
                       help=f"the queue 'fleet setup' printed (default: ${QUEUE_URL_ENV})")
    watch.add_argument("--region", metavar="R",
                       help="AWS region (default: from the queue URL, else AWS_REGION, "
                       "AWS_DEFAULT_REGION, the AWS profile, then on EC2 the instance's)")
    watch.add_argument("--hooks-dir", type=Path, metavar="DIR",
                       help="fleet hooks to run for each event (default: none, only print)")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.add_argument("--max-messages", type=_int_arg, metavar="N",
                       help="stop after handling N messages")
    watch.add_argument("--wait-seconds", type=_int_arg, default=20, metavar="S",
                       help="long-poll wait, 0..20 (default 20)")
    watch.add_argument("--visibility-timeout", type=_int_arg, metavar="S",
                       help="seconds a received message stays hidden (default: the queue's)")
    watch.add_argument("--hook-timeout", type=_float_arg, default=30.0, metavar="S",
                       help="seconds each hook may run (default 30); the watcher keeps the "
                       "message hidden from other watchers for as long as its hooks run")
    watch.add_argument("--metrics-file", type=Path, metavar="PATH",
                       help="write Prometheus metrics here for node_exporter's textfile "
                       f"collector, a *.prom file (default: ${METRICS_FILE_ENV}, else none)")
    watch.add_argument("--workers", type=_int_arg, metavar="N",
                       help="events whose hooks run at once (default 16, or "
                       f"${WORKERS_ENV}); one instance's events still run one at a time, "
                       "in order")
    watch.add_argument("--no-tags", action="store_true",
                       help="do not look up instance names and tags (no DescribeTags or "
                       "DescribeInstances calls, no ec2 permissions)")
    watch.add_argument("--lifecycle-heartbeat", type=_float_arg, metavar="S",
                       help="seconds between Auto Scaling lifecycle heartbeats while an "
                       "asg-termination event's hooks run (default: half the lifecycle "
                       "hook's HeartbeatTimeout)")
    _log_args(watch)
    watch.set_defaults(func=_watch, error_prefix="spotwatch fleet watch")
    parser.set_defaults(func=_missing_subcommand, fleet_parser=parser)


def _log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="default: console on a terminal, else json")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _float_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _missing_subcommand(args: argparse.Namespace) -> int:
    args.fleet_parser.print_help()
    return EXIT_USAGE


def _setup(args: argparse.Namespace) -> int:
    from spotwatch import logs
    from spotwatch.fleet_setup import setup_fleet

    logs.configure(args.log_format, args.log_level)
    result = setup_fleet(
        str(args.queue_name),
        region=args.region,
        visibility_timeout=int(args.visibility_timeout),
        max_receive_count=int(args.max_receive_count),
    )
    print(result.queue_url, flush=True)
    return 0


def _watch(args: argparse.Namespace) -> int:
    from spotwatch import logs
    from spotwatch.fleet_daemon import watch
    from spotwatch.fleet_settings import FleetWatchSettings

    queue_url = args.queue_url if args.queue_url is not None else os.environ.get(QUEUE_URL_ENV)
    if not queue_url:
        raise UsageError(f"no queue URL: pass --queue-url or set {QUEUE_URL_ENV}")
    workers = args.workers
    if workers is None:
        text = os.environ.get(WORKERS_ENV, "").strip()
        try:
            workers = int(text) if text else DEFAULT_WORKERS
        except ValueError:
            raise UsageError(f"{WORKERS_ENV}={text!r} is not a whole number") from None
    logs.configure(args.log_format, args.log_level)
    settings = FleetWatchSettings(
        queue_url=str(queue_url),
        hooks_dir=args.hooks_dir,
        json_output=bool(args.json),
        max_messages=args.max_messages,
        wait_seconds=int(args.wait_seconds),
        visibility_timeout=args.visibility_timeout,
        hook_timeout=float(args.hook_timeout),
        workers=int(workers),
        lifecycle_heartbeat=args.lifecycle_heartbeat,
        tags=not args.no_tags,
    )
    metrics_file = args.metrics_file
    if metrics_file is None and os.environ.get(METRICS_FILE_ENV):
        metrics_file = Path(os.environ[METRICS_FILE_ENV])
    return watch(settings, region=args.region, metrics_file=metrics_file)
