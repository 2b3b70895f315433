"""What a built-in action (``notify``, ``deregister``, ``replace``) knows about the run
it was called from: the hook environment's SPOTWATCH_* variables as one frozen value.

The actions run inside a hook, so the notice, the identity and the deadlines come
from the environment the daemon gave that hook (README, "Writing hooks"). Called
by hand, outside a hook, the same names can be set (or passed as flags); what is
missing is "unknown" and the deadline is a short default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from spotwatch.config import DEFAULT_STATE_DIR
from spotwatch.errors import UsageError

# When nothing says how long there is (called by hand): this many seconds.
DEFAULT_BUDGET = 60.0
RESUME = "resume"
SHUTDOWN = "shutdown"
REBALANCE = "rebalance-recommendation"


@dataclass(frozen=True)
class HookContext:
    """The notice and instance a hook runs for, and when the action must be done."""

    event: str = "unknown"
    action: str = ""
    notice_time: str = ""
    notice_id: str = ""
    deadline: float | None = None  # SPOTWATCH_DEADLINE: when the instance ends
    hook_deadline: float | None = None  # SPOTWATCH_HOOK_DEADLINE: when this hook is stopped
    instance_id: str = "unknown"
    instance_type: str = "unknown"
    region: str = "unknown"
    availability_zone: str = "unknown"
    cloud: str = ""
    asg_name: str = ""
    phase: str = ""  # "resume" in a resume hook
    shutdown: str = ""  # SPOTWATCH_SHUTDOWN: poweroff, reboot, ... for a shutdown
    drill: bool = False
    state_dir: str = DEFAULT_STATE_DIR

    @property
    def resuming(self) -> bool:
        return self.phase == RESUME

    def act_by(self, now: float, margin: float = 1.0, reserve: float = 0.0) -> float:
        """When the action must be finished: a little before the hook would be
        stopped, and ``reserve`` seconds before the instance's deadline (time kept
        for the hooks after this one); a short default without either."""
        limits = []
        if self.hook_deadline is not None:
            limits.append(self.hook_deadline)
        if self.deadline is not None:
            limits.append(self.deadline - reserve)
        if not limits:
            return now + DEFAULT_BUDGET
        return min(limits) - margin

    def key(self) -> str:
        """The journal key of this notice: the notice id, per phase."""
        base = self.notice_id or f"{self.event}@{self.notice_time}"
        return f"{RESUME}:{base}" if self.resuming else base


def epoch(text: str, name: str) -> float:
    """``text`` as epoch seconds; a one-line usage error naming ``name`` otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} must be epoch seconds, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"{name} must be epoch seconds, not {text!r}")
    return value


def from_environment(
    environ: Mapping[str, str] = os.environ, *, deadline: str | None = None
) -> HookContext:
    """The context of the hook whose environment is ``environ``; ``deadline`` (a flag)
    wins over SPOTWATCH_DEADLINE."""

    def get(name: str, default: str = "") -> str:
        return environ.get(name, "").strip() or default

    def optional_epoch(name: str) -> float | None:
        text = get(name)
        return epoch(text, name) if text else None

    end = epoch(deadline, "--deadline") if deadline else optional_epoch("SPOTWATCH_DEADLINE")
    return HookContext(
        event=get("SPOTWATCH_EVENT", "unknown"),
        action=get("SPOTWATCH_ACTION"),
        notice_time=environ.get("SPOTWATCH_NOTICE_TIME", ""),
        notice_id=get("SPOTWATCH_NOTICE_ID"),
        deadline=end,
        hook_deadline=optional_epoch("SPOTWATCH_HOOK_DEADLINE"),
        instance_id=get("SPOTWATCH_INSTANCE_ID", "unknown"),
        instance_type=get("SPOTWATCH_INSTANCE_TYPE", "unknown"),
        region=get("SPOTWATCH_REGION", "unknown"),
        availability_zone=get("SPOTWATCH_AZ", "unknown"),
        cloud=get("SPOTWATCH_CLOUD"),
        asg_name=get("SPOTWATCH_ASG_NAME"),
        phase=get("SPOTWATCH_PHASE"),
        shutdown=get("SPOTWATCH_SHUTDOWN"),
        drill=get("SPOTWATCH_DRILL") == "1",
        state_dir=get("SPOTWATCH_STATE_DIR", DEFAULT_STATE_DIR),
    )


def reserve_after(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds before the deadline kept for the hooks after a draining action: the
    daemon's deadline margin plus SPOTWATCH_RESERVE_AFTER (default 30), as the
    example drain hooks count them."""
    total = 0.0
    for name, default in (("SPOTWATCH_DEADLINE_MARGIN", "10"), ("SPOTWATCH_RESERVE_AFTER", "30")):
        text = environ.get(name, "").strip() or default
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name} must be seconds, not {text!r}") from None
        if not 0 <= value < 86400:
            raise UsageError(f"{name} must be seconds, not {text!r}")
        total += value
    return total


def known_region(context: HookContext) -> str | None:
    """The region for AWS clients: the hook's, else None (boto3's own lookup)."""
    return context.region if context.region not in ("", "unknown") else None


def keep_metadata_off_proxies(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Add the metadata addresses to NO_PROXY: boto3 may ask IMDS for credentials,
    and a proxy must never see (or answer) those requests."""
    wanted = ("169.254.169.254", "fd00:ec2::254", "169.254.170.2")
    for name in ("NO_PROXY", "no_proxy"):
        have = [part.strip() for part in environ.get(name, "").split(",") if part.strip()]
        if "*" in have:
            continue
        environ[name] = ",".join(have + [w for w in wanted if w not in have])


def now() -> float:
    return time.time()
