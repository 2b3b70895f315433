"""Front end of ``spotwatch run``: the daemon. Every flag also reads SPOTWATCH_<FLAG>."""

from __future__ import annotations

import argparse
import os
from typing import Any

from spotwatch import config


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="watch the metadata service for a notice that the instance ends; run the hooks",
        description=(
            "Poll the instance metadata service for the spot interruption notice and, "
            "when it appears, run the hooks in order within the deadline. Every flag can "
            "also be set in the environment as SPOTWATCH_<FLAG> (e.g. SPOTWATCH_INTERVAL); "
            "a flag on the command line wins."
        ),
    )
    add = _with_range(parser.add_argument)
    add("--imds-url", metavar="URL", help=f"IMDS base URL (default {config.DEFAULT_IMDS_URL})")
    add(
        "--interval",
        metavar="S",
        help=f"seconds between polls (default {config.DEFAULT_INTERVAL:g})",
    )
    add("--hooks-dir", metavar="DIR", help=f"hook scripts (default {config.DEFAULT_HOOKS_DIR})")
    add(
        "--resume-dir",
        metavar="DIR",
        help="hooks run when an end that ran the hooks turned out not to be one "
        f"(default {config.DEFAULT_RESUME_DIR}; need not exist)",
    )
    add("--state-dir", metavar="DIR", help=f"journal location (default {config.DEFAULT_STATE_DIR})")
    add(
        "--hook-timeout",
        metavar="S",
        help=f"longest one hook may run (default {config.DEFAULT_HOOK_TIMEOUT:g})",
    )
    add(
        "--deadline-margin",
        metavar="S",
        help="hooks must end this long before the interruption "
        f"(default {config.DEFAULT_DEADLINE_MARGIN:g})",
    )
    add(
        "--on-rebalance",
        action="store_const",
        const="1",
        help="also run the hooks on a rebalance recommendation",
    )
    # Issue 11: sources beyond the spot notice.
    add(
        "--watch",
        metavar="LIST",
        help="comma-separated sources: spot, rebalance, maintenance, asg, migrate, shutdown "
        "(default spot,shutdown; shutdown: run the hooks on a system shutdown with no notice)",
    )
    add(
        "--asg-lifecycle-hook",
        metavar="NAME",
        help="the group's termination lifecycle hook: heartbeat it while the hooks run, "
        "then complete it with CONTINUE",
    )
    add("--asg-name", metavar="NAME", help="the Auto Scaling group (default: looked up)")
    add(
        "--asg-deadline",
        metavar="S",
        help="seconds the hooks get after an Auto Scaling termination is seen "
        f"(default {config.DEFAULT_ASG_DEADLINE:g})",
    )
    add(
        "--maintenance-lead",
        metavar="S",
        help="run the hooks this long before a scheduled maintenance event "
        f"(default {config.DEFAULT_MAINTENANCE_LEAD:g}; needs maintenance in --watch)",
    )
    # Issue 12: Google Compute Engine and Azure.
    add(
        "--cloud",
        metavar="CLOUD",
        help="auto, aws, gcp or azure (default auto: DMI strings, else ask each metadata "
        "service once); on gcp, --watch migrate adds host migrations",
    )
    add(
        "--no-approve",
        action="store_const",
        const="1",
        help="Azure: do not approve (StartRequests) an event once its hooks are done",
    )
    add("--log-format", metavar="json|console", help="default: console on a TTY, else JSON")
    add("--log-level", metavar="LEVEL", help="debug, info, warning or error (default info)")
    # Chatty hooks (issue 14).
    add(
        "--hook-output-head",
        metavar="N",
        help="lines of one hook's output logged as they come "
        f"(default {config.DEFAULT_HOOK_OUTPUT_HEAD})",
    )
    add(
        "--hook-output-tail",
        metavar="N",
        help="then only its last N lines, logged when it ends, and a count of the rest "
        f"(default {config.DEFAULT_HOOK_OUTPUT_TAIL})",
    )
    add(
        "--metrics-file",
        metavar="PATH",
        help="keep Prometheus metrics in this file for node_exporter's textfile "
        "collector (a *.prom file in its --collector.textfile.directory; default: none)",
    )
    parser.set_defaults(func=_main)


def _with_range(add_argument: Any) -> Any:
    """``add_argument`` that appends the flag's range, from config.SETTINGS, to its help."""

    def add(flag: str, **kwargs: Any) -> Any:
        setting = config.BY_FLAG.get(flag)
        span = setting.range_text() if setting is not None else None
        if span is not None and "help" in kwargs:
            kwargs["help"] = f"{kwargs['help']}; range {span}"
        return add_argument(flag, **kwargs)

    return add


def _main(args: argparse.Namespace) -> int:
    flags = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in config.RUN_FLAGS}
    settings = config.resolve(flags, os.environ)

    from spotwatch import logs
    from spotwatch.daemon import run_daemon

    logs.configure(settings.log_format, settings.log_level)
    return run_daemon(settings)
