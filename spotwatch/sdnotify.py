"""sd_notify over the socket protocol: READY, STATUS, STOPPING and WATCHDOG.

No libsystemd binding: a notification is one datagram of ``KEY=value`` lines
sent to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a path, or an abstract
socket written with a leading ``@``). Without ``NOTIFY_SOCKET`` everything here
is a no-op, so the daemon behaves the same outside systemd.

The watchdog is pinged by the watch loop itself through ``watchdog_if_due()``
on every iteration, never from a thread: a wedged loop must stop the pings so
that systemd restarts the service.

One socket per message, closed in ``finally`` (as gunicorn does): pings come
every few seconds at most, so the cost is nothing, and a socket never outlives
a failure or lingers in the daemon's state.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any, Callable

from spotwatch.logs import get_logger

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str | None:
    """The address to connect to for a ``NOTIFY_SOCKET`` value, or None if unusable.

    ``@name`` is an abstract socket (``\\0name``); anything else must be an
    absolute path. Other schemes (e.g. ``vsock:``) are not supported.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def send(address: str, message: str) -> None:
    """Send ``message`` as one datagram to ``address``; raises OSError on failure."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(address)
        sock.sendall(message.encode("utf-8"))
    finally:
        sock.close()


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` to ``NOTIFY_SOCKET``; False if unset, unusable or the send failed."""
    address = socket_address(environ.get(NOTIFY_SOCKET, ""))
    if address is None:
        return False
    try:
        send(address, message)
    except OSError:
        return False
    return True


def watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds: how often to ping; None when no watchdog.

    ``WATCHDOG_PID``, when set, must name this process: the variables are
    inherited by children, which must not think the watchdog is theirs.
    """
    watchdog_pid = environ.get(WATCHDOG_PID, "").strip()
    if watchdog_pid and watchdog_pid != str(pid):
        return None
    try:
        usec = int(environ.get(WATCHDOG_USEC, "").strip())
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    """A STATUS value: one line, since the protocol is newline-separated."""
    return " ".join(text.split())


class Notifier:
    """The daemon's link to systemd; every method is a no-op outside systemd.

    ``environ``, ``clock``, ``pid`` and ``sender`` are seams for tests.
    """

    def __init__(
        self,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
        pid: int | None = None,
        sender: Callable[[str, str], None] = send,
    ) -> None:
        self._address = socket_address(environ.get(NOTIFY_SOCKET, ""))
        self._raw_socket = environ.get(NOTIFY_SOCKET, "")
        self._interval = (
            watchdog_seconds(environ, os.getpid() if pid is None else pid)
            if self._raw_socket
            else None
        )
        self._clock = clock
        self._sender = sender
        self._last_ping: float | None = None
        self._failing = False
        self._log: Any = get_logger()
        if self._raw_socket and self._address is None:
            self._log.warning(
                "sdnotify.unsupported_socket",
                notify_socket=self._raw_socket,
                hint="only a path or an @abstract socket is supported; "
                "systemd will not see READY or watchdog pings",
            )

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a socket we can use."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of WATCHDOG_USEC), or None."""
        return self._interval if self.enabled else None

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up is done (we are watching), with an optional STATUS."""
        lines = ["READY=1"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        self._send("\n".join(lines))

    def status(self, text: str) -> None:
        """Set the one-line status that ``systemctl status`` shows."""
        self._send(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> None:
        """Tell systemd we are shutting down, with an optional STATUS."""
        lines = ["STOPPING=1"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        self._send("\n".join(lines))

    def watchdog(self) -> None:
        """Ping the watchdog now (when enabled), regardless of when we last did."""
        if self.watchdog_interval() is None:
            return
        self._last_ping = self._clock()
        self._send("WATCHDOG=1")

    def watchdog_if_due(self) -> None:
        """Ping the watchdog if half of WATCHDOG_USEC has passed; call it every loop turn."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < interval:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            self._sender(self._address, message)
        except OSError as exc:
            # Once per run of failures: a dead socket must not flood the log.
            if not self._failing:
                self._failing = True
                self._log.warning(
                    "sdnotify.send_failed",
                    notify_socket=self._raw_socket,
                    error=str(exc),
                    hint="systemd may consider spotwatch hung and restart it; "
                    "check 'systemctl status spotwatch'",
                )
            return
        if self._failing:
            self._failing = False
            self._log.info("sdnotify.recovered", notify_socket=self._raw_socket)
