"""Front end of `spotwatch ship` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
from typing import Any

from spotwatch.errors import SpotwatchError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("ship", help="(not built yet)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    raise SpotwatchError("'spotwatch ship' is not built yet")
