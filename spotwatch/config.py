"""``spotwatch run`` settings: command line first, then ``SPOTWATCH_<FLAG>``, then defaults.

Pure: takes the parsed flags and the environment, returns a frozen RunConfig or
raises UsageError naming the flag or variable at fault and what to do.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spotwatch.clouds import registry
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
CLOUDS = ("auto", *registry.NAMES)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


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


_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


def url(text: str) -> str:
    """An http:// or https:// base URL with a usable host and port, parsed in full
    now rather than failing on every poll later."""
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// URL, got {text!r}")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"a URL holds no spaces or control characters, got {text!r}")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a usable URL ({exc}), got {text!r}") from None
    netloc = parts.netloc.rpartition("@")[2]
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"the URL names no host, got {text!r}")
    if netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address, in {text!r}") from None
    elif not _HOST_NAME.match(host):
        raise ValueError(f"{host!r} is not a host name or address, in {text!r}")
    if port == 0 or (port is None and netloc.endswith(":")):
        raise ValueError(f"expected a port from 1 to 65535, got {text!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a base URL has no ?query or #fragment, got {text!r}")
    return text.rstrip("/")


def seconds_between(low: float, high: float) -> Callable[[str], float]:
    """A parser for a number of seconds from ``low`` to ``high``, both included."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"must be from {low:g} to {high:g} seconds, got {text!r}")
        return value

    return parse


def count_up_to(high: int) -> Callable[[str], int]:
    """A parser for a whole number from 0 to ``high``."""

    def parse(text: str) -> int:
        value = count(text)
        if value > high:
            raise ValueError(f"must be from 0 to {high}, got {text!r}")
        return value

    return parse


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


GROUPS: tuple[tuple[str, str], ...] = (
    ("watch", "what to watch"),
    ("timing", "timing"),
    ("hooks", "hooks"),
    ("output", "output"),
    ("cloud", "cloud"),
)


@dataclass(frozen=True)
class Setting:
    """One ``spotwatch run`` setting, declared here once: its flag (and so its
    SPOTWATCH_* twin), RunConfig field, parser, range, default, help and group.
    The argument parser, RunConfig's defaults and the environment reading are
    built from :data:`SETTINGS`. ``help`` may hold ``{default}``, filled from
    ``default``; a numeric range is appended to it."""

    flag: str
    field: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    group: str
    metavar: str | None = None  # None: an on/off switch, given without a value
    low: float | None = None
    high: float | None = None
    unit: str = "s"

    @property
    def env(self) -> str:
        return env_name(self.flag)

    @property
    def switch(self) -> bool:
        return self.metavar is None

    def range_text(self) -> str | None:
        if self.low is None or self.high is None:
            return None
        return f"{self.low:g} to {self.high:g}{' ' + self.unit if self.unit else ''}"

    def help_text(self) -> str:
        text = self.help.format(default=_shown(self.default))
        span = self.range_text()
        return f"{text}; range {span}" if span is not None else text


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _number(
    flag: str, field: str, span: tuple[float, float], default: float, help: str, group: str
) -> Setting:
    low, high = span
    return Setting(flag, field, seconds_between(low, high), default, help, group, "S", low, high)


def _lines(flag: str, field: str, default: int, help: str) -> Setting:
    high = 100_000
    return Setting(flag, field, count_up_to(high), default, help, "output", "N", 0, high, "lines")


# Ranges. The interval: at least 0.1 s (faster would only load IMDS and a core),
# at most an hour. A hook's timeout: at most a day. The margin: at most an hour,
# and less than the shortest lead of a watched source (checked once the cloud is
# known). An Auto Scaling deadline: at most Auto Scaling's longest heartbeat
# timeout, 7200 s. The maintenance lead: at most a week (events come days ahead).
INTERVAL_RANGE = (0.1, 3600.0)
SETTINGS: tuple[Setting, ...] = (
    # What to watch: the sources, and what each needs.
    Setting(
        "--watch", "watch", watch_list, DEFAULT_WATCH,
        "comma-separated sources: " + ", ".join(WATCH_SOURCES) + " "
        "(default {default}; shutdown: run the hooks on a system shutdown with no notice)",
        "watch", "LIST",
    ),
    Setting(
        "--on-rebalance", "on_rebalance", boolean, False,
        "also run the hooks on a rebalance recommendation", "watch",
    ),
    Setting(
        "--asg-lifecycle-hook", "asg_lifecycle_hook", nonempty, None,
        "the group's termination lifecycle hook: heartbeat it while the hooks run, "
        "then complete it with CONTINUE",
        "watch", "NAME",
    ),
    Setting(
        "--asg-name", "asg_name", nonempty, None,
        "the Auto Scaling group (default: looked up)", "watch", "NAME",
    ),
    _number(
        "--asg-deadline", "asg_deadline", (1.0, 7200.0), DEFAULT_ASG_DEADLINE,
        "seconds the hooks get after an Auto Scaling termination is seen (default {default})",
        "watch",
    ),
    _number(
        "--maintenance-lead", "maintenance_lead", (1.0, 604800.0), DEFAULT_MAINTENANCE_LEAD,
        "run the hooks this long before a scheduled maintenance event "
        "(default {default}; needs maintenance in --watch)",
        "watch",
    ),
    # Timing.
    _number(
        "--interval", "interval", INTERVAL_RANGE, DEFAULT_INTERVAL,
        "seconds between polls (default {default})", "timing",
    ),
    _number(
        "--hook-timeout", "hook_timeout", (0.1, 86400.0), DEFAULT_HOOK_TIMEOUT,
        "longest one hook may run (default {default})", "timing",
    ),
    _number(
        "--deadline-margin", "deadline_margin", (0.0, 3600.0), DEFAULT_DEADLINE_MARGIN,
        "hooks must end this long before the interruption (default {default})", "timing",
    ),
    # Hooks: where they are, and where their journal is kept.
    Setting(
        "--hooks-dir", "hooks_dir", Path, Path(DEFAULT_HOOKS_DIR),
        "hook scripts (default {default})", "hooks", "DIR",
    ),
    Setting(
        "--resume-dir", "resume_dir", Path, Path(DEFAULT_RESUME_DIR),
        "hooks run when an end that ran the hooks turned out not to be one "
        "(default {default}; need not exist)",
        "hooks", "DIR",
    ),
    Setting(
        "--state-dir", "state_dir", Path, Path(DEFAULT_STATE_DIR),
        "journal location (default {default})", "hooks", "DIR",
    ),
    # Output: logs, chatty hooks (the lines past head and tail are counted, not
    # logged) and metrics.
    Setting(
        "--log-format", "log_format", choice(LOG_FORMATS), None,
        "default: console on a TTY, else JSON", "output", "json|console",
    ),
    Setting(
        "--log-level", "log_level", choice(LOG_LEVELS), "info",
        "debug, info, warning or error (default {default})", "output", "LEVEL",
    ),
    _lines(
        "--hook-output-head", "hook_output_head", DEFAULT_HOOK_OUTPUT_HEAD,
        "lines of one hook's output logged as they come (default {default})",
    ),
    _lines(
        "--hook-output-tail", "hook_output_tail", DEFAULT_HOOK_OUTPUT_TAIL,
        "then only its last N lines, logged when it ends, and a count of the rest "
        "(default {default})",
    ),
    Setting(
        "--metrics-file", "metrics_file", Path, None,
        "keep Prometheus metrics in this file for node_exporter's textfile "
        "collector (a *.prom file in its --collector.textfile.directory; default: none)",
        "output", "PATH",
    ),
    # Cloud: which one, where its metadata service is, what spotwatch may do there.
    Setting(
        "--cloud", "cloud", choice(CLOUDS), "auto",
        "auto, aws, gcp or azure (default auto: DMI strings, else ask each metadata "
        "service once); on gcp, --watch migrate adds host migrations",
        "cloud", "CLOUD",
    ),
    Setting(
        "--imds-url", "imds_url", url, DEFAULT_IMDS_URL,
        "IMDS base URL (default {default})", "cloud", "URL",
    ),
    Setting(
        "--no-approve", "no_approve", boolean, False,
        "Azure: do not approve (StartRequests) an event once its hooks are done", "cloud",
    ),
)
BY_FLAG = {setting.flag: setting for setting in SETTINGS}
RUN_FLAGS = tuple(BY_FLAG)
_DEFAULT: dict[str, Any] = {setting.field: setting.default for setting in SETTINGS}


@dataclass(frozen=True)
class RunConfig:
    """The settings of ``spotwatch run``: one typed field per row of SETTINGS (a
    test holds the two to each other), defaults taken from the table."""

    imds_url: str = _DEFAULT["imds_url"]
    interval: float = _DEFAULT["interval"]
    hooks_dir: Path = _DEFAULT["hooks_dir"]
    resume_dir: Path = _DEFAULT["resume_dir"]
    state_dir: Path = _DEFAULT["state_dir"]
    hook_timeout: float = _DEFAULT["hook_timeout"]
    deadline_margin: float = _DEFAULT["deadline_margin"]
    on_rebalance: bool = _DEFAULT["on_rebalance"]
    log_format: str | None = _DEFAULT["log_format"]  # None: console on a TTY, JSON otherwise
    log_level: str = _DEFAULT["log_level"]
    hook_output_head: int = _DEFAULT["hook_output_head"]
    hook_output_tail: int = _DEFAULT["hook_output_tail"]
    metrics_file: Path | None = _DEFAULT["metrics_file"]
    watch: tuple[str, ...] = _DEFAULT["watch"]
    asg_lifecycle_hook: str | None = _DEFAULT["asg_lifecycle_hook"]
    asg_name: str | None = _DEFAULT["asg_name"]
    asg_deadline: float = _DEFAULT["asg_deadline"]
    maintenance_lead: float = _DEFAULT["maintenance_lead"]
    cloud: str = _DEFAULT["cloud"]
    no_approve: bool = _DEFAULT["no_approve"]
    # Not a flag: whether --interval was given, so that it wins over Azure's 1 s default.
    interval_given: bool = False

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources watched, in WATCH_SOURCES order; --on-rebalance adds rebalance."""
        chosen = set(self.watch) | ({"rebalance"} if self.on_rebalance else set())
        return tuple(s for s in WATCH_SOURCES if s in chosen)


def resolve(flags: Mapping[str, str | None], environ: Mapping[str, str]) -> RunConfig:
    """Build the RunConfig from raw flag strings (None: not given) and the environment."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # field -> the flag or variable that set it
    for setting in SETTINGS:
        raw = flags.get(setting.flag)
        source = setting.flag
        if raw is None:
            source = setting.env
            raw = environ.get(source)
            # An empty switch variable says "off"; an empty value elsewhere is unset.
            if raw is None or (raw == "" and not setting.switch):
                continue
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as exc:
            raise UsageError(f"{source}: {exc}") from None
        given[setting.field] = source
    values["interval_given"] = "interval" in values  # Azure defaults to 1 s otherwise
    settings = RunConfig(**values)
    _check_maintenance_lead(settings)
    # With --cloud auto the lead is known once the cloud is (the daemon checks again
    # then); a margin no cloud leaves time for is an error now.
    check_margin(settings, settings.cloud)
    if settings.asg_lifecycle_hook and "asg" not in settings.sources:
        raise UsageError(
            "--asg-lifecycle-hook needs the asg source: add asg to --watch "
            "(e.g. --watch spot,asg or SPOTWATCH_WATCH=spot,asg)"
        )
    if "maintenance_lead" in given and "maintenance" not in settings.sources:
        # Like --asg-lifecycle-hook: a lead that changes nothing is a forgotten
        # --watch entry; refusing now beats a maintenance event going unwatched.
        raise UsageError(
            f"{given['maintenance_lead']} needs the maintenance source: add maintenance to "
            "--watch (e.g. --watch spot,maintenance or SPOTWATCH_WATCH=spot,maintenance)"
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


def shortest_lead(settings: RunConfig, cloud: str) -> tuple[float, str] | None:
    """The least time ahead any watched source announces an end on ``cloud``, and
    which source that is; None if no watched source has a fixed lead."""
    from spotwatch.clouds import registry

    leads = registry.get(cloud).leads(settings)
    return min(leads) if leads else None


def check_margin(settings: RunConfig, cloud: str) -> None:
    """UsageError if --deadline-margin leaves the hooks no time before the shortest
    lead of a watched source: every hook would be skipped at the notice."""
    if cloud == "auto":
        found = [one for c in CLOUDS[1:] if (one := shortest_lead(settings, c)) is not None]
        shortest = max(found) if found else None
    else:
        shortest = shortest_lead(settings, cloud)
    if shortest is None:
        return
    seconds_ahead, what = shortest
    if settings.deadline_margin >= seconds_ahead:
        raise UsageError(
            f"--deadline-margin ({settings.deadline_margin:g} s) leaves the hooks no time: "
            f"{what} comes {seconds_ahead:g} s ahead; use a margin under {seconds_ahead:g} s"
        )
