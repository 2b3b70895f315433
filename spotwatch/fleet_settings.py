"""What ``spotwatch fleet watch`` is told: its settings, their limits, and the one-line
usage errors for values out of range."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from spotwatch.errors import UsageError

MAX_WAIT_SECONDS = 20  # SQS long-poll limit
MAX_VISIBILITY_TIMEOUT = 43200
MAX_WORKERS = 1024
DEFAULT_WORKERS = 16
WORKERS_ENV = "SPOTWATCH_FLEET_WORKERS"

_QUEUE_URL_REGION = (
    re.compile(r"^https?://sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"),
    re.compile(r"^https?://([a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?/"),
)



@dataclass(frozen=True)
class FleetWatchSettings:
    queue_url: str
    hooks_dir: Path | None = None
    json_output: bool = False
    max_messages: int | None = None  # stop after handling this many messages
    wait_seconds: int = MAX_WAIT_SECONDS
    visibility_timeout: int | None = None  # None: the queue's own
    hook_timeout: float = 30.0
    kill_grace: float = 5.0
    workers: int = DEFAULT_WORKERS  # events whose hooks may run at once
    lifecycle_heartbeat: float | None = None  # None: half the lifecycle hook's HeartbeatTimeout
    tags: bool = True  # look instances' tags up (DescribeInstances); False: --no-tags
    status: bool | None = None  # a status line every few seconds; None: on a terminal


def region_from_queue_url(url: str) -> str | None:
    """``us-east-1`` from ``https://sqs.us-east-1.amazonaws.com/...``; None for other hosts."""
    for pattern in _QUEUE_URL_REGION:
        match = pattern.match(url)
        if match:
            return match.group(1)
    return None


def check_settings(settings: FleetWatchSettings) -> None:
    if not settings.queue_url:
        raise UsageError("no queue URL: pass --queue-url or set SPOTWATCH_QUEUE_URL")
    if not settings.queue_url.startswith(("https://", "http://")):
        raise UsageError(
            f"--queue-url {settings.queue_url!r} is not a URL; "
            "use what 'spotwatch fleet setup' printed"
        )
    if not 0 <= settings.wait_seconds <= MAX_WAIT_SECONDS:
        raise UsageError(f"--wait-seconds must be 0..{MAX_WAIT_SECONDS}")
    vt = settings.visibility_timeout
    if vt is not None and not 0 <= vt <= MAX_VISIBILITY_TIMEOUT:
        raise UsageError(f"--visibility-timeout must be 0..{MAX_VISIBILITY_TIMEOUT} seconds")
    if settings.max_messages is not None and settings.max_messages < 0:
        raise UsageError("--max-messages must be 0 or more")
    if settings.hook_timeout <= 0:
        raise UsageError("--hook-timeout must be more than 0 seconds")
    beat = settings.lifecycle_heartbeat
    if beat is not None and not 1 <= beat <= 3600:
        raise UsageError("--lifecycle-heartbeat must be 1..3600 seconds")
    if not 1 <= settings.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be 1..{MAX_WORKERS} (or set {WORKERS_ENV})")
