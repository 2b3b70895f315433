"""The argparse front end: one ``spotwatch.commands.<name>_cmd`` module per subcommand
(the suffix keeps ``commands/ship_cmd.py``, the front end, apart from ``ship.py``,
what it runs).

Each command module exposes ``add_parser(subparsers)`` that ends in
``set_defaults(func=...)``; ``func`` takes the Namespace, unpacks it into typed
arguments and calls the implementation, which it imports lazily so that
``spotwatch status --help`` or ``spotwatch run`` pay only for what they use.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from spotwatch import __version__
from spotwatch.errors import EXIT_USAGE, SpotwatchError

COMMANDS = (
    "run", "hooks", "drill", "ship", "notify", "deregister", "replace", "status", "install",
    "uninstall", "fleet", "sim",
)  # fmt: skip


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spotwatch",
        description="Run your hooks before a spot or preemptible instance ends, on AWS, "
        "Google Compute Engine and Azure; report spot requests and fleet events on AWS.",
    )
    parser.add_argument("--version", action="version", version=f"spotwatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"spotwatch.commands.{name}_cmd")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])  # as typed (drill --installed)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args))
    except SpotwatchError as exc:
        # A nested command (fleet setup) names itself: set_defaults(error_prefix=...).
        prefix = getattr(args, "error_prefix", None) or f"spotwatch {args.command}"
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `spotwatch hooks --json | head`: the reader left; no traceback. Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
