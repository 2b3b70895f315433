"""sd_notify against a real unix datagram socket the test binds (path and abstract)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spotwatch import sdnotify
from spotwatch.sdnotify import Notifier


class Listener:
    """A bound AF_UNIX datagram socket collecting what arrives."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket

    def recv(self, timeout: float = 5.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        self.sock.settimeout(0)
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        notify_socket = path
    else:
        name = f"spotwatch-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        notify_socket = "@" + name
    try:
        yield Listener(sock, notify_socket)
    finally:
        sock.close()


def test_ready_status_and_watchdog_arrive(listener: Listener) -> None:
    env = {"NOTIFY_SOCKET": listener.notify_socket, "WATCHDOG_USEC": "20000000"}
    notifier = Notifier(environ=env)
    assert notifier.enabled
    assert notifier.watchdog_interval() == 10.0

    notifier.ready("watching http://169.254.169.254 every 5s")
    assert listener.recv() == "READY=1\nSTATUS=watching http://169.254.169.254 every 5s"
    notifier.status("notice terminate:\nrunning 10-checkpoint.sh")
    assert listener.recv() == "STATUS=notice terminate: running 10-checkpoint.sh"
    notifier.watchdog_if_due()
    assert listener.recv() == "WATCHDOG=1"
    notifier.stopping()
    assert listener.recv() == "STOPPING=1"


def test_module_notify(listener: Listener) -> None:
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": listener.notify_socket})
    assert listener.recv() == "READY=1"
    assert not sdnotify.notify("READY=1", {})


def test_watchdog_pings_at_most_every_interval(listener: Listener) -> None:
    now = [100.0]
    env = {"NOTIFY_SOCKET": listener.notify_socket, "WATCHDOG_USEC": "4000000"}
    notifier = Notifier(environ=env, clock=lambda: now[0])
    notifier.watchdog_if_due()  # first call pings at once
    for step in (0.5, 0.5, 0.5):  # 1.5 s < 2 s: no ping
        now[0] += step
        notifier.watchdog_if_due()
    now[0] += 0.5  # 2.0 s since the first ping
    notifier.watchdog_if_due()
    time.sleep(0.05)
    assert listener.drain() == ["WATCHDOG=1", "WATCHDOG=1"]


def test_stalled_loop_stops_watchdog_pings(listener: Listener) -> None:
    """A loop that pings from its own iterations goes silent when it wedges."""
    env = {"NOTIFY_SOCKET": listener.notify_socket, "WATCHDOG_USEC": "100000"}  # ping each 50 ms
    notifier = Notifier(environ=env)
    wedge = threading.Event()
    stop = threading.Event()
    wedged = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            notifier.watchdog_if_due()
            if wedge.is_set():
                wedged.set()
                stop.wait()  # stuck, as a hung IMDS call or deadlock would be
            time.sleep(0.01)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        # The live loop pings: several arrive.
        for _ in range(3):
            assert listener.recv(timeout=10) == "WATCHDOG=1"
        wedge.set()
        assert wedged.wait(10)
        listener.drain()  # anything sent before the wedge
        # Many ping intervals pass with the loop wedged: nothing arrives.
        with pytest.raises(socket.timeout):
            listener.recv(timeout=1.0)
    finally:
        stop.set()
        thread.join(10)


def test_no_socket_means_no_op() -> None:
    sent: list[str] = []
    notifier = Notifier(environ={"WATCHDOG_USEC": "1000000"}, sender=lambda a, m: sent.append(m))
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    notifier.ready("x")
    notifier.watchdog_if_due()
    notifier.status("y")
    assert sent == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # someone else's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", **env}
    assert Notifier(environ=env).watchdog_interval() == expected


def test_socket_address() -> None:
    assert sdnotify.socket_address("@abc") == "\0abc"
    assert sdnotify.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.socket_address("") is None
    assert sdnotify.socket_address("@") is None
    assert sdnotify.socket_address("vsock:2:1234") is None


def test_failed_send_warns_once_then_recovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotwatch import logs

    logs.configure("json", "debug", stream=sys.stdout)
    path = tmp_path / "gone.sock"  # nobody listening
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2"})
    for _ in range(5):
        notifier.watchdog()  # raises nothing
    out = capsys.readouterr().out
    assert out.count("sdnotify.send_failed") == 1

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        notifier.watchdog()
        sock.settimeout(5)
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()
    assert "sdnotify.recovered" in capsys.readouterr().out
