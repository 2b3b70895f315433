"""Front end of ``spotwatch install``: the systemd unit, settings file and example hooks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "install",
        help="install the systemd service, /etc/spotwatch/spotwatch.env and example hooks",
        description=(
            "Install spotwatch.service (ExecStart= pointing at this spotwatch), "
            "/etc/spotwatch/hooks.d with the example hooks disabled, and "
            "/etc/spotwatch/spotwatch.env with every setting commented; then "
            "'systemctl daemon-reload' and 'systemctl enable --now spotwatch'. "
            "Safe to run again: a file you changed is kept, and says so."
        ),
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="install into this directory tree instead of / (no systemctl; for images and tests)",
    )
    parser.add_argument(
        "--no-enable",
        action="store_true",
        help="only write the files; do not run systemctl",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also install the strict hardening drop-in (hooks may write only to "
        "/var/lib/spotwatch and /var/log/spotwatch)",
    )
    parser.add_argument(
        "--print",
        dest="show",
        choices=("unit", "env", "hooks", "fleet-unit", "strict"),
        help="write nothing; print a shipped file as install would write it: unit, env, "
        "hooks (the examples), fleet-unit (for 'spotwatch fleet watch') or strict "
        "(the drop-in); the units' ExecStart= runs this spotwatch",
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.show:
        from spotwatch.errors import UsageError
        from spotwatch.install import print_shipped

        if args.root or args.no_enable or args.strict:
            raise UsageError("--print writes nothing: use it without --root, --no-enable, --strict")
        return print_shipped(args.show)
    from spotwatch.install import install

    root = Path(args.root) if args.root else None
    return install(root, enable=not args.no_enable, strict=bool(args.strict))
