"""The HTTP plumbing shared by the Google and Azure metadata simulators.

A threading HTTP/1.1 server on 127.0.0.1 (keep-alive, TCP_NODELAY) that asks
its simulator what to answer, records every request, and can answer with
faults: 500/503/429, a dropped or reset connection, a garbled body.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

FAULTS = ("500", "503", "429", "drop", "reset", "garbled", "no-header")


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no answer at all (drop, reset)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    fault: str = ""


@dataclass(frozen=True)
class Record:
    """One request the simulator saw."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    status: int
    wall_time: float  # when it arrived
    fault: str = ""


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    path: str | None


class SimBase:
    """Start/stop, the request log, fault injection. Subclasses implement ``answer``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 wall_clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._host = host
        self._port = port
        self._wall = wall_clock
        self._cond = threading.Condition(threading.RLock())
        self._closing = threading.Event()
        self._faults: list[_Fault] = []
        self._log: list[Record] = []
        self._arrived: dict[str, int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle
    def start(self) -> Any:
        self._closing.clear()
        server = _Server((self._host, self._port), _Handler)
        server.sim = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "simulator not started"
        return f"http://{self._host}:{self._server.server_address[1]}"

    # -- faults and observation
    def inject(self, fault: str, *, count: int | None = 1, path: str | None = None) -> None:
        """``fault`` (see FAULTS) on the next ``count`` requests (None: until cleared)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._cond:
            self._faults.append(_Fault(fault, count, path))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def requests(self, path: str | None = None, method: str | None = None) -> list[Record]:
        with self._cond:
            return [
                r for r in self._log
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]  # fmt: skip

    def arrived(self, path: str) -> int:
        """Requests for ``path`` received so far, answered or still hanging."""
        with self._cond:
            return self._arrived.get(path, 0)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

    def _take_fault(self, path: str) -> str:
        for fault in self._faults:
            if fault.path is None or fault.path == path:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault.kind
        return ""

    def _serve(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes) -> Reply:  # fmt: skip
        received = self._wall()
        with self._cond:
            fault = self._take_fault(path)
            self._arrived[path] = self._arrived.get(path, 0) + 1
            self._cond.notify_all()
        reply = self.answer(method, path, query, headers, body, fault)
        with self._cond:
            self._log.append(
                Record(method, path, query, headers, body, reply.status, received, reply.fault)
            )
            self._cond.notify_all()
        return reply

    def answer(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes, fault: str) -> Reply:  # fmt: skip
        raise NotImplementedError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: SimBase

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sys_version = ""
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        body = self.rfile.read(int(length)) if length.isdigit() and int(length) <= 65536 else b""
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.sim._serve(method, parts.path, query, headers, body)
        if reply.status == 0:
            self.close_connection = True
            if reply.fault == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True
