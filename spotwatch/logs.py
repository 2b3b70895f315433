"""structlog set-up: JSON lines for journald, readable console output on a TTY.

Every event has a stable dotted name (``notice.detected``, ``hook.finished``,
``imds.fault``, ...) and the fields an operator needs; no prose in the name.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


def choose_format(requested: str | None, stream: TextIO) -> str:
    """``requested`` if given, else console on a TTY and JSON otherwise."""
    if requested:
        return requested
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure(fmt: str | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once for the whole process."""
    out = stream if stream is not None else sys.stderr
    chosen = choose_format(fmt, out)
    renderer: Any
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: Any) -> Any:
    """A bound logger; ``initial`` fields are added to every event."""
    return structlog.get_logger(**initial)
