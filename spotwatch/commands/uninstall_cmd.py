"""Front end of ``spotwatch uninstall``: remove what install put there, keep your hooks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "uninstall",
        help="stop and remove the service and what 'spotwatch install' wrote",
        description=(
            "'systemctl disable --now spotwatch', then remove the unit, the strict "
            "drop-in, and the settings file and example hooks unless you changed them. "
            "Your own hooks, and enabled examples, stay."
        ),
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="uninstall from this directory tree instead of / (no systemctl)",
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from spotwatch.install import uninstall

    return uninstall(Path(args.root) if args.root else None)
