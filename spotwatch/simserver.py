"""The HTTP plumbing shared by the metadata simulators (AWS, Google, Azure).

A threading HTTP/1.1 server on 127.0.0.1 (keep-alive, TCP_NODELAY) that asks
its simulator what to answer, records every request, and can answer with
faults: 500/503/429, a dropped or reset connection, silence, a garbled body
(each simulator names its own in ``faults``).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, ClassVar
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

    faults: ClassVar[tuple[str, ...]] = FAULTS  # what ``inject`` accepts
    server_name: ClassVar[str] = ""  # the Server header's product; "": http.server's
    idle_seconds: ClassVar[float] = 60.0  # idle keep-alive connections end after this
    thread_prefix: ClassVar[str] = "simserver"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 wall_clock: Callable[[], float] = time.time, hang_seconds: float = 5.0,
                 max_log: int = 100_000) -> None:  # fmt: skip
        self._host = host
        self._port = port
        self._wall = wall_clock
        self.hang_seconds = hang_seconds  # how long a "hang" fault says nothing
        self._cond = threading.Condition(threading.RLock())
        self._closing = threading.Event()
        self._faults: list[_Fault] = []
        # Bounded, for long standalone runs; counts (and waits) are exact regardless.
        self._log: deque[Record] = deque(maxlen=max_log)
        self._counts: dict[tuple[str, str], int] = {}
        self._arrived: dict[str, int] = {}
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle
    def start(self) -> Any:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._closing.clear()
        server = _Server((self._host, self._port), _Handler)
        server.sim = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = f"{self.thread_prefix}:{self.port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()  # releases hanging handlers
        with self._cond:
            self._cond.notify_all()
        server.shutdown()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would linger otherwise
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # -- faults and observation
    def inject(self, fault: str, *, count: int | None = 1, path: str | None = None) -> None:
        """``fault`` (see ``faults``) on the next ``count`` matching requests (None: until
        cleared), optionally only on requests for ``path``."""
        if fault not in self.faults:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(self.faults)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for until cleared")
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

    def count(self, path: str, method: str = "GET") -> int:
        """Requests for ``path`` answered (or left unanswered by a fault) so far."""
        with self._cond:
            return self._counts.get((method, path), 0)

    def wait_for_requests(
        self, path: str, count: int, *, method: str = "GET", timeout: float = 10.0
    ) -> list[Record]:
        """Block until ``count`` requests for ``path`` were answered (or not); TimeoutError."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._counts.get((method, path), 0) >= count, timeout=timeout
            )
            seen = self._counts.get((method, path), 0)
        if not ok:
            raise TimeoutError(f"saw {seen} of {count} {method} {path} within {timeout:g} s")
        return self.requests(path, method)

    def arrived(self, path: str) -> int:
        """Requests for ``path`` received so far, answered or still hanging."""
        with self._cond:
            return self._arrived.get(path, 0)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

    def fault_applies(self, kind: str, only: str | None, method: str, path: str) -> bool:
        """Whether an injected fault ``kind`` (for path ``only``, None: any) hits this
        request; a simulator may narrow some faults to some methods or paths."""
        return only is None or only == path

    def refuse(self, method: str, path: str, headers: Mapping[str, str]) -> Reply | None:
        """An answer given before any fault is taken (a request the server never serves)."""
        return None

    def _take_fault(self, method: str, path: str) -> str:
        for fault in self._faults:
            if self.fault_applies(fault.kind, fault.path, method, path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault.kind
        return ""

    def _serve(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes) -> Reply:  # fmt: skip
        received = self._wall()
        refused = self.refuse(method, path, headers)
        with self._cond:
            fault = "" if refused is not None else self._take_fault(method, path)
            self._arrived[path] = self._arrived.get(path, 0) + 1
            self._cond.notify_all()
        reply = refused or self.answer(method, path, query, headers, body, fault)
        with self._cond:
            self._log.append(
                Record(method, path, query, headers, body, reply.status, received, reply.fault)
            )
            key = (method, path)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._cond.notify_all()
        return reply

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

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
    protocol_version = "HTTP/1.1"  # keep-alive, like the metadata servers
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.sim.idle_seconds)
        # Headers and body go out in separate writes: without NODELAY, Nagle and
        # delayed ACKs add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sim._track(self.connection, True)

    def finish(self) -> None:
        self.server.sim._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def version_string(self) -> str:
        return self.server.sim.server_name or super().version_string()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

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
            if reply.fault == "hang":
                self.server.sim._closing.wait(self.server.sim.hang_seconds)
            elif reply.fault == "reset":
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
