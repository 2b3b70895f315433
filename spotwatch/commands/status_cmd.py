"""Front end of `spotwatch status`: the bid status of spot requests, from outside.

Only argparse and syntax checks here; boto3 is imported by the implementation
(:mod:`spotwatch.status`) when a query runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from spotwatch.errors import UsageError
from spotwatch.spot_codes import REQUEST_STATES

_INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_REQUEST_ID = re.compile(r"^sir-[0-9a-zA-Z]+$")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]+$")
_TAG_KEY_MAX = 128

_EPILOG = """\
exit status:
  0  every request is healthy, waiting, or ended by you
  1  an interruption is under way (marked-for-*, or a capacity reclaim in its two minutes)
  2  a request was interrupted or failed (also bad usage: a one-line error, no table)
  3  EC2 could not be asked (credentials, permission, throttling, network); or an
     unknown ID or status code, when no request found says 1 or 2
needs ec2:DescribeSpotInstanceRequests, ec2:DescribeInstances, and for --all-regions
ec2:DescribeRegions."""


def spot_id(text: str) -> str:
    """An instance id (``i-`` + 8 or 17 hex digits) or a spot request id (``sir-``...)."""
    if _INSTANCE_ID.match(text) or _REQUEST_ID.match(text):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither an instance id (i-0123456789abcdef0) "
        "nor a spot request id (sir-...)"
    )


def region_name(text: str) -> str:
    """A region name such as ``us-east-1``."""
    if _REGION.match(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a region name like us-east-1")


def tag_filter(text: str) -> tuple[str, str | None]:
    """``KEY=VALUE``, or ``KEY`` alone for any value."""
    key, sep, value = text.partition("=")
    if not key or len(key) > _TAG_KEY_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (or KEY for any value)")
    return key, (value if sep else None)


def interval(text: str) -> float:
    """Seconds between polls, at least 1."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds >= 1.0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: poll at most once a second (--watch 1 or more)"
        )
    return seconds


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="the bid status of your spot requests, from outside the instance",
        description=(
            "Show the bid status of spot requests from the EC2 API, most urgent first.\n"
            "IDs may be instance ids (i-...) and spot request ids (sir-...), mixed;\n"
            "with no ID and no filter, every spot request in the region."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ids", nargs="*", metavar="ID", type=spot_id,
                        help="instance id (i-...) or spot request id (sir-...)")
    parser.add_argument("--region", action="append", type=region_name, default=[],
                        metavar="R", help="region to ask (repeatable); "
                        "default: AWS_REGION, AWS_DEFAULT_REGION, the AWS profile, "
                        "then on EC2 the instance's own region")
    parser.add_argument("--all-regions", action="store_true",
                        help="ask every region enabled for the account")
    parser.add_argument("--tag", action="append", type=tag_filter, default=[],
                        metavar="KEY=VALUE", help="only requests with this tag (repeatable; "
                        "values of one key are ORed, keys ANDed; KEY alone: any value)")
    parser.add_argument("--state", action="append", choices=REQUEST_STATES, default=[],
                        metavar="S", help="only requests in this state (repeatable): "
                        + ", ".join(REQUEST_STATES))
    parser.add_argument("--json", action="store_true",
                        help="a JSON list of objects with stable field names")
    parser.add_argument("--watch", type=interval, metavar="SECONDS",
                        help="poll every SECONDS (1 or more) and report each change, "
                        "until Ctrl-C")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    ids: list[str] = args.ids
    regions: list[str] = args.region
    all_regions: bool = args.all_regions
    tags: list[tuple[str, str | None]] = args.tag
    states: list[str] = args.state
    as_json: bool = args.json
    watch: float | None = args.watch
    if all_regions and regions:
        raise UsageError("--region and --all-regions do not mix: pass one of them")

    from spotwatch.status import StatusQuery, run_status

    query = StatusQuery(
        ids=tuple(ids),
        regions=tuple(regions),
        all_regions=all_regions,
        tags=tuple(tags),
        states=tuple(states),
    )
    return run_status(query, as_json=as_json, watch=watch)
