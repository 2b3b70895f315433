"""Front end of ``spotwatch sim``: a fake metadata service (AWS, Google, Azure) on
127.0.0.1, from pip and from the one-file install alike. ``python -m
spotwatch.imdssim`` takes the same options, declared here once."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "A fake instance metadata service on 127.0.0.1 with a scheduled notice, for trying "
    "hooks and 'spotwatch run --imds-url' off the cloud. Prints its URL, then serves "
    "until Ctrl-C or SIGTERM."
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run a fake metadata service (AWS, Google, Azure) with a scheduled notice",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=_main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1338, help="port (default 1338; 0: any)")
    parser.add_argument("--notice-in", type=float, metavar="S", help="notice appears after S s")
    parser.add_argument("--action", default="terminate", choices=("terminate", "stop", "hibernate"))
    parser.add_argument(
        "--lead", type=float, default=120.0, metavar="S", help="notice time = appearance + S"
    )
    parser.add_argument("--rebalance-in", type=float, metavar="S", help="rebalance after S s")
    parser.add_argument(
        "--require-token", action="store_true", help="IMDSv2 only: GETs need a token"
    )
    parser.add_argument(
        "--asg-terminated-in", type=float, metavar="S", help="lifecycle state Terminated after S s"
    )
    parser.add_argument(
        "--maintenance-in",
        type=float,
        metavar="S",
        help="a scheduled maintenance event with NotBefore S s from now",
    )
    parser.add_argument(
        "--maintenance-code",
        default="system-reboot",
        help="its code (default system-reboot; instance-stop, instance-retirement, ...)",
    )
    parser.add_argument(
        "--cloud",
        default="aws",
        choices=("aws", "gcp", "azure"),
        help="protocol to speak (gcp: preempted after --notice-in; azure: a Preempt event "
        "--lead s ahead)",
    )


def _main(args: argparse.Namespace) -> int:
    from spotwatch.imdssim import serve_until_stopped

    return serve_until_stopped(args)
