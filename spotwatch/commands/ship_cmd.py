"""Front end of `spotwatch ship`: arguments and hook environment in, summary out."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from spotwatch.errors import SpotwatchError, UsageError

if TYPE_CHECKING:
    from spotwatch.ship import Tuning

_STORAGE_CLASS = re.compile(r"^[A-Z][A-Z_]*$")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ship",
        help="upload log files to S3 before the instance is gone",
        description=(
            "Upload files, directories (recursively) or globs to "
            "s3://BUCKET/PREFIX/INSTANCE_ID/NOTICE_TIME/<absolute path>[.gz], smallest "
            "first, gzip-compressed, finishing or aborting cleanly before the deadline. "
            "Never modifies local files. Exit status: 0 all shipped, 1 some not, 2 bad input."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file, directory or glob")
    parser.add_argument("--bucket", help="S3 bucket (default: $SPOTWATCH_S3_BUCKET)")
    parser.add_argument("--prefix", help="key prefix (default: $SPOTWATCH_S3_PREFIX, or none)")
    parser.add_argument("--region", metavar="R",
                        help="the bucket's AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, "
                        "the AWS profile, then the instance's own region, else us-east-1)")
    parser.add_argument(
        "--no-gzip", dest="gzip", action="store_false", help="upload files as they are"
    )
    parser.add_argument(
        "--deadline",
        metavar="EPOCH",
        help="epoch seconds when the instance goes away (default: $SPOTWATCH_DEADLINE, or none)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=10, metavar="N", help="parallel requests (default 10)"
    )
    parser.add_argument("--sse", choices=("aws:kms", "AES256"), help="server-side encryption")
    parser.add_argument("--kms-key-id", metavar="K", help="KMS key for --sse aws:kms")
    parser.add_argument("--storage-class", metavar="C", help="e.g. STANDARD_IA, GLACIER_IR")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be shipped; send nothing"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--log-format", choices=("json", "console"), help="log format")
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from spotwatch import logs
    from spotwatch.ship import ShipOptions, Tuning, ship

    env = os.environ
    bucket = (
        args.bucket if args.bucket is not None else env.get("SPOTWATCH_S3_BUCKET", "")
    ).strip()
    if not bucket:
        raise UsageError("no bucket: pass --bucket or set SPOTWATCH_S3_BUCKET")
    if bucket.startswith("s3://") or "/" in bucket or " " in bucket:
        raise UsageError(f"--bucket takes a bucket name, not {bucket!r}: put the path in --prefix")
    prefix = args.prefix if args.prefix is not None else env.get("SPOTWATCH_S3_PREFIX", "")
    if args.deadline is not None:
        deadline = _epoch(args.deadline, "--deadline")
    elif env.get("SPOTWATCH_DEADLINE", "").strip():
        deadline = _epoch(env["SPOTWATCH_DEADLINE"], "SPOTWATCH_DEADLINE")
    else:
        deadline = None
    if not 1 <= args.concurrency <= 64:
        raise UsageError(f"--concurrency must be between 1 and 64, not {args.concurrency}")
    sse = args.sse or ""
    kms_key_id = args.kms_key_id or ""
    if kms_key_id and not sse:
        sse = "aws:kms"
    if kms_key_id and sse != "aws:kms":
        raise UsageError("--kms-key-id needs --sse aws:kms")
    storage_class = (args.storage_class or "").upper()
    if storage_class and not _STORAGE_CLASS.match(storage_class):
        raise UsageError(f"--storage-class {args.storage_class!r} is not a storage class name")

    options = ShipOptions(
        paths=tuple(args.paths),
        bucket=bucket,
        prefix=prefix,
        gzip=args.gzip,
        deadline=deadline,
        concurrency=args.concurrency,
        sse=sse,
        kms_key_id=kms_key_id,
        storage_class=storage_class,
        dry_run=args.dry_run,
        instance_id=env.get("SPOTWATCH_INSTANCE_ID", "").strip() or "unknown",
        notice_time=env.get("SPOTWATCH_NOTICE_TIME", ""),
        region=(args.region or "").strip(),
    )
    logs.configure(args.log_format, args.log_level)
    report = ship(options, _tuning(Tuning()))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.summary_line())
    sys.stdout.flush()
    if report.abandoned:
        # A request in flight cannot be interrupted and the interpreter would wait
        # for it at exit, past the deadline: its multipart upload is already
        # aborted, so leave now.
        if report.error:
            print(f"spotwatch ship: error: {report.error}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(report.exit_code)
    if report.error:
        # The summary above says what went; the one-line error says what to fix.
        raise SpotwatchError(report.error, report.exit_code)
    return report.exit_code


def _epoch(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} must be epoch seconds, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"{name} must be epoch seconds, not {text!r}")
    return value


def _tuning(default: Tuning) -> Tuning:
    """Undocumented overrides for tests and the benchmark (sizes in bytes, seconds)."""
    from dataclasses import replace

    from spotwatch.ship_plan import Estimator

    env = os.environ
    changes: dict[str, Any] = {}
    for name, field, kind in (
        ("SPOTWATCH_SHIP_MULTIPART_THRESHOLD", "multipart_threshold", int),
        ("SPOTWATCH_SHIP_CHUNK_SIZE", "chunk_size", int),
        ("SPOTWATCH_SHIP_ABORT_MARGIN", "abort_margin", float),
        ("SPOTWATCH_SHIP_GZIP_LEVEL", "gzip_level", int),
    ):
        if env.get(name):
            try:
                changes[field] = kind(env[name])
            except ValueError:
                raise UsageError(f"{name} must be a number, not {env[name]!r}") from None
    if env.get("SPOTWATCH_SHIP_GZIP_FAST"):
        changes["fast_gzip"] = env["SPOTWATCH_SHIP_GZIP_FAST"] not in ("0", "false", "no")
    if env.get("SPOTWATCH_SHIP_ASSUMED_RATE"):
        try:
            changes["estimator"] = Estimator(rate=float(env["SPOTWATCH_SHIP_ASSUMED_RATE"]))
        except ValueError:
            raise UsageError("SPOTWATCH_SHIP_ASSUMED_RATE must be bytes per second") from None
    return replace(default, **changes)
