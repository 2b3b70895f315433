"""Front end of ``spotwatch sim``: a fake metadata service (AWS, Google, Azure) on
127.0.0.1, from pip and from the one-file install alike. ``python -m
spotwatch.imdssim`` takes the same options, declared here once."""

from __future__ import annotations

import argparse
from typing import Any

from spotwatch.clouds import registry
from spotwatch.clouds.base import SimRequest

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
        metavar="CODE",
        default="system-reboot",
        help="its code (default system-reboot; instance-stop, instance-retirement, ...)",
    )
    parser.add_argument(
        "--cloud",
        default="aws",
        choices=registry.NAMES,
        help="protocol to speak (gcp: preempted after --notice-in; azure: a Preempt event "
        "--lead s ahead)",
    )


def _main(args: argparse.Namespace) -> int:
    return serve_until_stopped(args)


def serve_until_stopped(args: argparse.Namespace) -> int:
    """Start the simulator of the cloud ``args.cloud`` names, print its URL, serve until
    SIGTERM/SIGINT."""
    from spotwatch.errors import SpotwatchError
    from spotwatch.stopper import Stopper

    request = SimRequest(
        host=args.host,
        port=args.port,
        notice_in=args.notice_in,
        action=args.action,
        lead=args.lead,
        rebalance_in=args.rebalance_in,
        require_token=args.require_token,
        asg_terminated_in=args.asg_terminated_in,
        maintenance_in=args.maintenance_in,
        maintenance_code=args.maintenance_code,
    )
    try:
        sim = registry.get(args.cloud).serve(request)
    except (OSError, OverflowError) as err:
        raise SpotwatchError(f"cannot listen on {args.host}:{args.port}: {err}") from None
    # Routed before the URL is printed: whoever reads it may send SIGTERM at once.
    with Stopper() as stop:
        print(sim.url, flush=True)
        try:
            while not stop.wait():
                pass
        finally:
            sim.stop()
    return 0
