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
    for name, title in config.GROUPS:
        group = parser.add_argument_group(title)
        for setting in config.SETTINGS:
            if setting.group == name:
                _add(group, setting)
    parser.set_defaults(func=_main)


def _add(group: Any, setting: config.Setting) -> None:
    # Every value stays a string (or None: not given) for config.resolve, which
    # applies the environment and the defaults.
    if setting.switch:
        group.add_argument(
            setting.flag, dest=setting.field, action="store_const", const="1",
            help=setting.help_text(),
        )
    else:
        group.add_argument(
            setting.flag, dest=setting.field, metavar=setting.metavar, help=setting.help_text()
        )


def _main(args: argparse.Namespace) -> int:
    flags = {s.flag: getattr(args, s.field) for s in config.SETTINGS}
    settings = config.resolve(flags, os.environ)

    from spotwatch import logs
    from spotwatch.daemon import run_daemon

    logs.configure(settings.log_format, settings.log_level)
    return run_daemon(settings)
