"""Front end of `spotwatch run` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
from typing import Any

from spotwatch.errors import SpotwatchError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="(not built yet)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    raise SpotwatchError("'spotwatch run' is not built yet")
