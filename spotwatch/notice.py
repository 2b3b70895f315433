"""The plain data every part of spotwatch passes around.

Monitors produce a ``Notice``; the watcher, the hook runner, the journal and
the drill consume it. All frozen dataclasses, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SPOT_INTERRUPTION = "spot-interruption"
REBALANCE_RECOMMENDATION = "rebalance-recommendation"
ASG_TERMINATION = "asg-termination"
SCHEDULED_MAINTENANCE = "scheduled-maintenance"

ACTIONS = ("terminate", "stop", "hibernate")
# SPOTWATCH_ACTION for a rebalance recommendation, which has no action of its own.
REBALANCE_ACTION = "rebalance"

# AWS gives two minutes; used when a notice carries no usable time.
DEFAULT_LEAD_SECONDS = 120.0


@dataclass(frozen=True)
class Identity:
    """The instance identity document, read once and cached."""

    instance_id: str = "unknown"
    instance_type: str = "unknown"
    region: str = "unknown"
    availability_zone: str = "unknown"
    account_id: str = "unknown"


@dataclass(frozen=True)
class Notice:
    """One interruption notice or rebalance recommendation, whatever its source.

    ``raw_time`` is the time exactly as IMDS gave it (empty when it gave none);
    ``time`` is that time parsed to epoch seconds, or None when unusable;
    ``deadline`` is the epoch second by which hooks must be done; ``id`` is
    stable for the same IMDS answer, so a restarted daemon recognises it.
    """

    kind: str
    action: str
    raw_time: str
    time: float | None
    deadline: float
    id: str
    source: str
    problem: str = ""  # why the answer was malformed, if it was
    # The notice announces the end of the instance (so it folds with another that
    # does: one end, one run); False for rebalance, reboots, system-maintenance.
    ends_instance: bool = True
    # Source-specific extra hook environment, e.g. SPOTWATCH_ASG_NAME.
    env: tuple[tuple[str, str], ...] = ()


def notice_id(kind: str, action: str, key: str) -> str:
    """A stable id for a notice, derived from its payload.

    ``key`` is the notice time normalised to ``YYYY-MM-DDTHH:MM:SSZ`` when it
    parsed (so ``spot/instance-action`` and ``spot/termination-time`` agree),
    else the raw body, stripped.
    """
    material = "\0".join((kind, action, key.strip())).encode()
    return hashlib.sha256(material).hexdigest()[:16]
