"""structlog set-up: JSON lines for journald, readable console output on a TTY.

Every event has a stable dotted name (``notice.detected``, ``hook.finished``,
``imds.fault``, ...) and the fields an operator needs; no prose in the name.

Under systemd, when stderr is the journal's stream (``JOURNAL_STREAM`` names its
device and inode), each line starts with its syslog priority, ``<4>`` for a
warning, ``<3>`` for an error: journald strips the prefix and files the line at
that priority (``SyslogLevelPrefix=``, on by default), so ``journalctl -p
warning`` shows warnings and errors. Chosen over journald's native protocol:
the lines stay on stderr, one write each, the same JSON ``journalctl -o cat``
shows, with nothing to fall back to when the journal's socket is missing; and
anywhere else (a terminal, a file, a pipe) no prefix is written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, TextIO

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
    processors: list[Any]
    if chosen == "json":
        # One call per event: two events per hook lie on the path from one hook
        # to the next (bench/hooks.py). No contextvars: nothing here binds any.
        processors = [render_json_line]
    else:
        processors = [add_level_and_timestamp, structlog.dev.ConsoleRenderer(colors=out.isatty())]
    min_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=processors,
        wrapper_class=_json_bound_logger(min_level)
        if chosen == "json"
        else structlog.make_filtering_bound_logger(min_level),
        logger_factory=(
            (lambda *args: PriorityWriter(out))
            if is_journal_stream(out)
            else structlog.WriteLoggerFactory(file=out)  # one write() per line
        ),
        cache_logger_on_first_use=False,
    )


# syslog priorities (sd-daemon.h's SD_ERR, SD_WARNING, ...), by structlog method name.
PRIORITIES = {
    "debug": 7, "info": 6, "msg": 6, "warning": 4, "warn": 4,
    "error": 3, "exception": 3, "err": 3, "critical": 2, "fatal": 2,
}  # fmt: skip


def is_journal_stream(stream: object, environ: Mapping[str, str] = os.environ) -> bool:
    """Is ``stream`` the journal's stdout/stderr stream? systemd sets
    ``JOURNAL_STREAM=DEVICE:INODE`` of it for a service's output."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class PriorityWriter:
    """structlog's final logger for the journal's stream: one write per line, the line
    prefixed with its syslog priority ``<N>`` (journald's SyslogLevelPrefix=)."""

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._lock = threading.Lock()

    def _line(self, priority: int, message: str) -> None:
        with self._lock:
            self._file.write(f"<{priority}>{message}\n")
            self._file.flush()

    def __getattr__(self, name: str) -> Callable[[str], None]:
        priority = PRIORITIES.get(name, 6)
        return lambda message: self._line(priority, message)


_LEVELS = (("debug", 10), ("info", 20), ("warning", 30), ("error", 40), ("critical", 50))


def _json_bound_logger(min_level: int) -> type:
    """structlog's filtering bound logger, with a direct path for the JSON chain:
    while the processors are exactly ``[render_json_line]`` (not, say, swapped by
    structlog.testing.capture_logs), an event is one dict, one render and one
    write, with the same line as the general path. Two events per hook lie on
    the path from one hook to the next; the general path costs a few more calls."""
    base = structlog.make_filtering_bound_logger(min_level)
    methods = {
        name: _direct_method(name, getattr(base, name))
        for name, number in _LEVELS
        if number >= min_level
    }
    return type("JsonBoundLogger", (base,), methods)


def _direct_method(name: str, general: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        processors = self._processors
        if args or len(processors) != 1 or processors[0] is not render_json_line:
            return general(self, event, *args, **kw)
        # The order structlog gives the fields: bound context, the call's, event.
        event_dict = {**self._context, **kw}
        event_dict["event"] = event
        return getattr(self._logger, name)(render_json_line(self._logger, name, event_dict))

    method.__name__ = name
    return method


def add_level_and_timestamp(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog's add_log_level and TimeStamper(fmt="iso", utc=True) in one step:
    ``level`` ("exception" is "error") and ``timestamp`` such as
    2026-11-26T05:23:44.123456Z, always with microseconds."""
    event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
    event_dict["timestamp"] = utc_timestamp(time.time())
    return event_dict


def render_json_line(logger: Any, method_name: str, event_dict: Any) -> str:
    """The JSON chain in one step: level and timestamp as add_level_and_timestamp,
    a traceback as structlog's format_exc_info (the ``exception`` field), then
    one line of JSON; what JSON cannot hold is written as its repr()."""
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
    event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
    event_dict["timestamp"] = utc_timestamp(time.time())
    return _encode(event_dict)


_LEVEL_NAMES = {"exception": "error", "warn": "warning"}
_second_cache: tuple[int, str] = (-1, "")


def utc_timestamp(epoch: float) -> str:
    """ISO 8601 UTC with microseconds; the part up to the second is made once per second."""
    global _second_cache
    second = int(epoch)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    micros = min(999_999, int((epoch - second) * 1_000_000))
    return f"{prefix}.{micros:06d}Z"


def _make_encoder() -> Callable[[Any], str]:
    """One encoder for every line, what json.dumps would write: json.dumps and
    JSONEncoder.encode build a new C encoder on every call, a cost paid twice
    per hook. Falls back to JSONEncoder.encode where the C encoder is absent."""
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(default=repr).encode
    # markers None: no cycle check, an event dict holds plain values.
    iterencode = make(
        None, repr, encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def encode(event_dict: Any) -> str:
        return "".join(iterencode(event_dict, 0))

    return encode


_encode = _make_encoder()


def get_logger(**initial: Any) -> Any:
    """A bound logger; ``initial`` fields are added to every event."""
    return structlog.get_logger(**initial)
