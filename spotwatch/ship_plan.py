"""The pure decisions behind `spotwatch ship`: keys, order, the deadline, the verdict.

No I/O here: the uploader in ``spotwatch.ship`` feeds these functions plain data
(paths, sizes, monotonic seconds, S3 error codes) and acts on what they return.
"""

from __future__ import annotations

import datetime
import heapq
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from spotwatch.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

MiB = 1024 * 1024

# Why a file was not shipped: stable words, used in logs and in the JSON summary.
DEADLINE = "deadline"  # never started: its likely duration was more than the time left
ABORTED = "aborted"  # in flight when the deadline came; its multipart upload was aborted
INTERRUPTED = "interrupted"  # in flight or waiting when SIGTERM/SIGINT arrived
STOPPED = "stopped"  # not attempted after an error that every upload would hit
VANISHED = "vanished"  # gone between listing and upload (rotated away)
UNREADABLE = "unreadable"  # could not be opened (permissions)
SHRANK = "shrank"  # truncated while being read (copytruncate rotation)
FAILED = "failed"  # S3 refused or failed this one upload

SHIPPED = "shipped"
NOT_SHIPPED = "not-shipped"

GZIP_SUFFIX = ".gz"

_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|z|[+-]\d{2}:?\d{2})?$"
)


# ---------------------------------------------------------------- object keys


def notice_stamp(raw: str, now: float) -> str:
    """The notice time as a key segment: ``YYYYMMDDTHHMMSSZ`` (UTC), which sorts.

    ``raw`` is SPOTWATCH_NOTICE_TIME as IMDS gave it. Empty (a run by hand):
    the time ``now`` (epoch seconds). Unparseable: the raw text made key-safe,
    so the same notice still lands under the same key.
    """
    text = raw.strip()
    if not text:
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    match = _RFC3339.match(text)
    if match is None:
        return _safe_segment(text)[:64]
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        local = datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second)
        )
        utc = local - datetime.timedelta(seconds=_zone_offset(zone or "Z"))
    except (OverflowError, ValueError):
        return _safe_segment(text)[:64]
    return utc.strftime("%Y%m%dT%H%M%SZ")


def _zone_offset(zone: str) -> int:
    if zone in ("Z", "z"):
        return 0
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)


def _safe_segment(text: str) -> str:
    cleaned = _SAFE_SEGMENT.sub("-", text).strip("-.")
    return cleaned or "unknown"


def key_base(prefix: str, instance_id: str, stamp: str) -> str:
    """``PREFIX/INSTANCE_ID/STAMP/``: everything of a key but the file's own path."""
    parts = [p for p in prefix.strip("/").split("/") if p] if prefix else []
    parts.append(_safe_segment(instance_id or "unknown"))
    parts.append(_safe_segment(stamp))
    return "/".join(parts) + "/"


def object_key(base: str, path: str, gzip: bool) -> str:
    """The key of the local file ``path`` (absolute): the path without its leading slash.

    The whole path, not a part of it, so two PATH arguments can never map two
    files to one key, and an operator finds ``/var/log/app/x.log`` at
    ``BASE/var/log/app/x.log[.gz]``.
    """
    relative = path.lstrip("/")
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        # A name that is not UTF-8 (surrogate-escaped bytes): keep it readable and unique.
        relative = relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return base + relative + (GZIP_SUFFIX if gzip else "")


# ---------------------------------------------------------------- order and deadline


@dataclass(frozen=True)
class Candidate:
    """A regular file found by the walk, with the size it had then."""

    path: str
    size: int


def smallest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Upload order: the most files get out before the deadline (ties by path)."""
    return sorted(candidates, key=lambda c: (c.size, c.path))


@dataclass(frozen=True)
class Estimator:
    """How long one upload is likely to take: ``latency + size / rate``.

    Starts from an assumption (``latency`` seconds per request, ``rate`` source
    bytes per second per upload, worth ``prior_bytes`` of evidence) and refines
    the rate with every completed upload; tiny uploads barely move it, big ones
    soon outweigh the assumption. Measured per upload, so it already accounts
    for uploads sharing the link and for gzip's CPU time.
    """

    latency: float = 0.1
    rate: float = 16.0 * MiB
    prior_bytes: float = 8.0 * MiB
    seen_bytes: float = 0.0
    seen_seconds: float = 0.0
    fastest: float | None = None

    def current_latency(self) -> float:
        if self.fastest is None:
            return self.latency
        return min(self.latency, self.fastest)

    def current_rate(self) -> float:
        return (self.prior_bytes + self.seen_bytes) / (
            self.prior_bytes / self.rate + self.seen_seconds
        )

    def seconds_for(self, size: int) -> float:
        """The likely duration of uploading ``size`` source bytes."""
        return self.current_latency() + size / self.current_rate()

    def observe(self, size: int, seconds: float) -> Estimator:
        """A new estimator that has also seen an upload of ``size`` bytes take ``seconds``."""
        seconds = max(seconds, 0.0)
        fastest = seconds if self.fastest is None else min(self.fastest, seconds)
        transfer = max(seconds - self.current_latency(), 0.0)
        return replace(
            self,
            seen_bytes=self.seen_bytes + size,
            seen_seconds=self.seen_seconds + transfer,
            fastest=fastest,
        )


def fits(size: int, now: float, abort_at: float | None, estimator: Estimator) -> bool:
    """May an upload of ``size`` bytes start at ``now``? Only if it likely ends by ``abort_at``."""
    if abort_at is None:
        return True
    return now + estimator.seconds_for(size) <= abort_at


def likely_schedule(
    ordered: Sequence[Candidate],
    concurrency: int,
    now: float,
    abort_at: float | None,
    estimator: Estimator,
) -> list[bool]:
    """For each file in upload order: would a run with ``estimator``'s throughput start it?

    Simulates ``concurrency`` upload slots, each file taking the earliest free
    one; what ``--dry-run`` reports.
    """
    slots = [now] * max(concurrency, 1)
    verdicts = []
    for candidate in ordered:
        start = heapq.heappop(slots)
        starts = fits(candidate.size, start, abort_at, estimator)
        heapq.heappush(slots, start + estimator.seconds_for(candidate.size) if starts else start)
        verdicts.append(starts)
    return verdicts


# ---------------------------------------------------------------- S3 errors

_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredTokenException",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "Forbidden", "403"})
_SETTINGS_CODES = frozenset(
    {"InvalidArgument", "InvalidStorageClass", "InvalidRequest", "InvalidEncryptionAlgorithmError"}
)
_NOT_AUTHORIZED = re.compile(r"not authorized to perform:?\s*([a-z0-9-]+:[A-Za-z0-9*]+)")
_PERMISSION_FOR = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
}


@dataclass(frozen=True)
class Verdict:
    """What one S3 failure means: for this file only, or for every upload (``fatal``)."""

    message: str
    fatal: bool = False
    exit_code: int = EXIT_FAILURE


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def judge_s3_error(
    code: str, message: str, operation: str, bucket: str, key: str, kms: bool
) -> Verdict:
    """Classify an S3 error response by its code, message and operation."""
    detail = one_line(f"{code}: {message}" if message else code)
    if code in ("NoSuchBucket",):
        return Verdict(
            f"bucket '{bucket}' does not exist (check --bucket or SPOTWATCH_S3_BUCKET)",
            fatal=True,
            exit_code=EXIT_USAGE,
        )
    if code in _CREDENTIAL_CODES:
        return Verdict(
            f"bad AWS credentials ({detail}): check the instance role or AWS_* settings",
            fatal=True,
            exit_code=EXIT_USAGE,
        )
    if code in _DENIED_CODES or code.startswith("KMS.AccessDenied"):
        permission = _missing_permission(message, operation, kms)
        resource = _resource_for(permission, bucket, key)
        return Verdict(
            f"access denied: the credentials need {permission} on {resource}",
            fatal=True,
            exit_code=EXIT_USAGE,
        )
    if code in _SETTINGS_CODES or code.startswith("KMS."):
        return Verdict(
            f"S3 refused the upload settings ({detail}): check --sse, --kms-key-id "
            "and --storage-class",
            fatal=True,
            exit_code=EXIT_USAGE,
        )
    return Verdict(detail)


def _missing_permission(message: str, operation: str, kms: bool) -> str:
    found = _NOT_AUTHORIZED.search(message)
    if found:
        return found.group(1)
    if kms and "kms" in message.lower():
        return "kms:GenerateDataKey"
    return _PERMISSION_FOR.get(operation, "s3:PutObject")


def _resource_for(permission: str, bucket: str, key: str) -> str:
    if permission.startswith("kms:"):
        return "the KMS key"
    return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}/*"


# ---------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Outcome:
    """What became of one file. ``size`` is the source bytes shipped (or found)."""

    path: str
    key: str
    size: int
    status: str
    reason: str = ""
    detail: str = ""
    bytes_sent: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "key": self.key, "bytes": self.size}
        if self.status == SHIPPED:
            data["bytes_sent"] = self.bytes_sent
            data["seconds"] = round(self.seconds, 3)
        else:
            data["reason"] = self.reason
            if self.detail:
                data["detail"] = self.detail
        return data


@dataclass(frozen=True)
class Report:
    """The whole run, as the summary line and ``--json`` present it."""

    bucket: str
    base: str
    outcomes: tuple[Outcome, ...]
    seconds: float
    error: str = ""
    exit_code: int = EXIT_OK
    dry_run: bool = False
    ignored: tuple[str, ...] = field(default=())
    abandoned: int = 0  # uploads whose requests were still running at the end
    deadline: float | None = None  # epoch seconds, as given

    @property
    def shipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == SHIPPED]

    @property
    def not_shipped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != SHIPPED]

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.not_shipped:
            counts[outcome.reason] = counts.get(outcome.reason, 0) + 1
        return dict(sorted(counts.items()))

    def as_dict(self) -> dict[str, Any]:
        shipped = self.shipped
        return {
            "bucket": self.bucket,
            "base": self.base,
            "dry_run": self.dry_run,
            "deadline": self.deadline,
            "exit_code": self.exit_code,
            "error": self.error or None,
            "seconds": round(self.seconds, 3),
            "files": len(self.outcomes),
            "files_shipped": len(shipped),
            "bytes": sum(o.size for o in self.outcomes),
            "bytes_shipped": sum(o.size for o in shipped),
            "bytes_sent": sum(o.bytes_sent for o in shipped),
            "not_shipped_by_reason": self.reasons(),
            "shipped": [o.as_dict() for o in shipped],
            "not_shipped": [o.as_dict() for o in self.not_shipped],
            "ignored": list(self.ignored),
        }

    def summary_line(self) -> str:
        shipped = self.shipped
        verb = "would ship" if self.dry_run else "shipped"
        line = (
            f"{verb} {len(shipped)} of {len(self.outcomes)} files, "
            f"{_human(sum(o.size for o in shipped))}"
        )
        if not self.dry_run:
            line += f" ({_human(sum(o.bytes_sent for o in shipped))} sent)"
        line += f" to s3://{self.bucket}/{self.base} in {self.seconds:.1f}s"
        reasons = self.reasons()
        if reasons:
            line += "; not shipped: " + ", ".join(f"{n} {r}" for r, n in reasons.items())
        if self.error:
            line += f"; error: {self.error}"
        return line


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def exit_status(outcomes: Sequence[Outcome], fatal_code: int | None, missing: bool) -> int:
    """0 when everything went, 1 when some files did not, 2 for bad input."""
    if missing or fatal_code == EXIT_USAGE:
        return EXIT_USAGE
    if fatal_code is not None or any(o.status != SHIPPED for o in outcomes):
        return EXIT_FAILURE
    return EXIT_OK
