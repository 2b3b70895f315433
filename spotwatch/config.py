"""``spotwatch run`` settings: command line first, then ``SPOTWATCH_<FLAG>``, then defaults.

Pure: takes the parsed flags and the environment, returns a frozen RunConfig or
raises UsageError naming the flag or variable at fault and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spotwatch.errors import UsageError

DEFAULT_IMDS_URL = "http://169.254.169.254"
DEFAULT_INTERVAL = 5.0
DEFAULT_HOOKS_DIR = "/etc/spotwatch/hooks.d"
DEFAULT_RESUME_DIR = "/etc/spotwatch/resume.d"
DEFAULT_STATE_DIR = "/var/lib/spotwatch"
DEFAULT_HOOK_TIMEOUT = 60.0
DEFAULT_DEADLINE_MARGIN = 10.0
DEFAULT_HOOK_OUTPUT_HEAD = 100
DEFAULT_HOOK_OUTPUT_TAIL = 100
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
# migrate: Google only; shutdown: a system shutdown with no notice (on by default).
WATCH_SOURCES = ("spot", "rebalance", "maintenance", "asg", "migrate", "shutdown")
DEFAULT_WATCH = ("spot", "shutdown")
DEFAULT_ASG_DEADLINE = 300.0
DEFAULT_MAINTENANCE_LEAD = 300.0
# Issue 12: which cloud.
CLOUDS = ("auto", "aws", "gcp", "azure")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class RunConfig:
    imds_url: str = DEFAULT_IMDS_URL
    interval: float = DEFAULT_INTERVAL
    hooks_dir: Path = Path(DEFAULT_HOOKS_DIR)
    resume_dir: Path = Path(DEFAULT_RESUME_DIR)
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    deadline_margin: float = DEFAULT_DEADLINE_MARGIN
    on_rebalance: bool = False
    log_format: str | None = None  # None: console on a TTY, JSON otherwise
    log_level: str = "info"
    # Chatty hooks (issue 14): lines of one hook's output logged as they come, and
    # the last ones logged when it ends; the rest are counted, not logged.
    hook_output_head: int = DEFAULT_HOOK_OUTPUT_HEAD
    hook_output_tail: int = DEFAULT_HOOK_OUTPUT_TAIL
    # metrics (issue 14): Prometheus textfile for node_exporter
    metrics_file: Path | None = None
    # Issue 11: what to watch (spot, rebalance, maintenance, asg) and their settings.
    watch: tuple[str, ...] = DEFAULT_WATCH
    asg_lifecycle_hook: str | None = None
    asg_name: str | None = None
    asg_deadline: float = DEFAULT_ASG_DEADLINE
    maintenance_lead: float = DEFAULT_MAINTENANCE_LEAD
    # Issue 12: which cloud (auto, aws, gcp, azure); Azure's event approval.
    cloud: str = "auto"
    no_approve: bool = False
    interval_given: bool = False  # --interval set: it wins over Azure's 1 s default

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources watched, in WATCH_SOURCES order; --on-rebalance adds rebalance."""
        chosen = set(self.watch) | ({"rebalance"} if self.on_rebalance else set())
        return tuple(s for s in WATCH_SOURCES if s in chosen)


def env_name(flag: str) -> str:
    """``--hook-timeout`` -> ``SPOTWATCH_HOOK_TIMEOUT``."""
    return "SPOTWATCH_" + flag.lstrip("-").replace("-", "_").upper()


def seconds(text: str, *, allow_zero: bool = False) -> float:
    """A number of seconds; raises ValueError with a readable reason."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "greater than 0"
        raise ValueError(f"must be {bound} seconds, got {text!r}")
    return value


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


def count(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"must be 0 or more, got {text!r}")
    return value


def url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// URL, got {text!r}")
    return text.rstrip("/")


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {text!r}")
        return lowered

    return parse


def watch_list(text: str) -> tuple[str, ...]:
    """``spot,asg`` -> ("spot", "asg"); an unknown or missing name is an error."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"name at least one of {', '.join(WATCH_SOURCES)}")
    unknown = [n for n in names if n not in WATCH_SOURCES]
    if unknown:
        raise ValueError(
            f"unknown source {unknown[0]!r}; expected a comma-separated list of "
            f"{', '.join(WATCH_SOURCES)}"
        )
    return tuple(s for s in WATCH_SOURCES if s in names)


def nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a name, got nothing")
    return text.strip()


# flag name -> (parser, RunConfig field)
_FIELDS: dict[str, tuple[Callable[[str], Any], str]] = {
    "--imds-url": (url, "imds_url"),
    "--interval": (seconds, "interval"),
    "--hooks-dir": (Path, "hooks_dir"),
    "--resume-dir": (Path, "resume_dir"),
    "--state-dir": (Path, "state_dir"),
    "--hook-timeout": (seconds, "hook_timeout"),
    "--deadline-margin": (lambda t: seconds(t, allow_zero=True), "deadline_margin"),
    "--on-rebalance": (boolean, "on_rebalance"),
    "--log-format": (choice(LOG_FORMATS), "log_format"),
    "--log-level": (choice(LOG_LEVELS), "log_level"),
    # Chatty hooks (issue 14).
    "--hook-output-head": (count, "hook_output_head"),
    "--hook-output-tail": (count, "hook_output_tail"),
    # metrics (issue 14)
    "--metrics-file": (Path, "metrics_file"),
    # Issue 11: sources beyond the spot notice.
    "--watch": (watch_list, "watch"),
    "--asg-lifecycle-hook": (nonempty, "asg_lifecycle_hook"),
    "--asg-name": (nonempty, "asg_name"),
    "--asg-deadline": (seconds, "asg_deadline"),
    "--maintenance-lead": (seconds, "maintenance_lead"),
    # Issue 12: Google Compute Engine and Azure.
    "--cloud": (choice(CLOUDS), "cloud"),
    "--no-approve": (boolean, "no_approve"),
}

RUN_FLAGS = tuple(_FIELDS)


def resolve(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> RunConfig:
    """Build the RunConfig from raw flag strings (None: not given) and the environment."""
    values: dict[str, Any] = {}
    for flag, (parse, field) in _FIELDS.items():
        raw = flags.get(flag)
        source = flag
        if raw is None:
            source = env_name(flag)
            raw = environ.get(source)
            if raw is None or (raw == "" and flag != "--on-rebalance"):
                continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise UsageError(f"{source}: {exc}") from None
    values["interval_given"] = "interval" in values  # issue 12: Azure defaults to 1 s
    settings = RunConfig(**values)
    _check_maintenance_lead(settings)
    if settings.asg_lifecycle_hook and "asg" not in settings.sources:
        raise UsageError(
            "--asg-lifecycle-hook needs the asg source: add asg to --watch "
            "(e.g. --watch spot,asg or SPOTWATCH_WATCH=spot,asg)"
        )
    return settings


def _check_maintenance_lead(settings: RunConfig) -> None:
    # Hooks must end --deadline-margin before NotBefore: a lead no longer than the
    # margin would leave them no time at all.
    if "maintenance" in settings.sources and settings.maintenance_lead <= settings.deadline_margin:
        raise UsageError(
            f"--maintenance-lead ({settings.maintenance_lead:g} s) must exceed "
            f"--deadline-margin ({settings.deadline_margin:g} s): the hooks would get no time; "
            "raise the lead or lower the margin"
        )
