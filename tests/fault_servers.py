"""Byte-level fake metadata servers (AWS IMDS, Google, Azure) on 127.0.0.1, for fault injection.

Unlike the simulators in ``spotwatch.imdssim*`` (well-behaved servers with a
few canned faults), these write raw bytes on raw sockets, so a test can make a
server do anything a broken or hostile one could: drip a body one byte at a
time with or without ``Content-Length``, send an endless body, send headers
and then nothing, hang, close or reset, send 5 MB. Each connection is served
on its own thread; every request is recorded (``requests``).

A server is a list of routes: ``server.route(method, path, behaviour)``; the
newest route that matches wins, so a test overrides a cloud's normal routes
(``aws``, ``google``, ``azure``) with a fault and removes it again
(``server.unroute``) to let the normal answer through. A behaviour is a
callable ``(conn, request)``; the ones below cover the usual faults.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


class Headers(dict[str, str]):
    """Request headers; lookups ignore case."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class Request:
    method: str
    target: str  # path and query as sent
    headers: Headers
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.target).query).items()}


class Conn:
    """One accepted connection, as a behaviour sees it."""

    def __init__(self, sock: socket.socket, server: FaultServer) -> None:
        self.sock = sock
        self.server = server
        self.closed = False

    def send(self, data: bytes) -> bool:
        """Send ``data``; False once the client has gone (or the server is stopping)."""
        if self.server.stopping.is_set():
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def wait(self, seconds: float) -> bool:
        """Sleep; False if the server is stopping."""
        return not self.server.stopping.wait(seconds)

    def close(self) -> None:
        self.closed = True

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0)."""
        import struct

        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.closed = True


Behaviour = Callable[[Conn, Request], None]


def head(status: int, headers: Mapping[str, str] = {}, *, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect",
            400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


# -- behaviours ------------------------------------------------------------------------


def reply(
    status: int = 200, body: bytes = b"", headers: Mapping[str, str] = {}, *, close: bool = False
) -> Behaviour:
    """A well-formed answer with Content-Length."""

    def run(conn: Conn, req: Request) -> None:
        extra = dict(headers)
        if close:
            extra["Connection"] = "close"
        conn.send(head(status, extra, length=len(body)) + body)
        if close:
            conn.close()

    return run


def drip(
    body: bytes,
    every: float = 0.5,
    *,
    status: int = 200,
    content_length: bool = True,
    headers: Mapping[str, str] = {},
) -> Behaviour:
    """Headers at once, then ``body`` one byte every ``every`` seconds."""

    def run(conn: Conn, req: Request) -> None:
        extra = dict(headers)
        if not content_length:
            extra["Connection"] = "close"
        if not conn.send(head(status, extra, length=len(body) if content_length else None)):
            return
        for i in range(len(body)):
            if not conn.wait(every) or not conn.send(body[i : i + 1]):
                return
        conn.close()

    return run


def endless(every: float = 0.5, *, status: int = 200, content_length: bool = False,
            headers: Mapping[str, str] = {}) -> Behaviour:  # fmt: skip
    """Headers, then a body that never ends, one byte every ``every`` seconds."""

    def run(conn: Conn, req: Request) -> None:
        extra = dict(headers)
        length = 60_000 if content_length else None  # under the caps: only time ends it
        if not conn.send(head(status, extra, length=length)):
            return
        while conn.wait(every) and conn.send(b"x"):
            pass
        conn.close()

    return run


def headers_then_silence(status: int = 200, *, length: int | None = 40,
                         headers: Mapping[str, str] = {}) -> Behaviour:  # fmt: skip
    """Headers (announcing ``length`` bytes), then nothing, until the server stops."""

    def run(conn: Conn, req: Request) -> None:
        conn.send(head(status, headers, length=length))
        conn.wait(3600)
        conn.close()

    return run


def silence() -> Behaviour:
    """Read the request, answer nothing (a hang)."""

    def run(conn: Conn, req: Request) -> None:
        conn.wait(3600)
        conn.close()

    return run


def hang_up() -> Behaviour:
    """Close the connection without a word."""

    def run(conn: Conn, req: Request) -> None:
        conn.close()

    return run


def huge(size: int = 5 * 1024 * 1024, *, content_length: bool = True, status: int = 200
         ) -> Behaviour:  # fmt: skip
    """A body of ``size`` bytes, sent as fast as the client reads."""

    def run(conn: Conn, req: Request) -> None:
        extra = {} if content_length else {"Connection": "close"}
        if not conn.send(head(status, extra, length=size if content_length else None)):
            return
        chunk = b"x" * 65536
        left = size
        while left > 0:
            if not conn.send(chunk[: min(left, len(chunk))]):
                return
            left -= len(chunk)
        conn.close()

    return run


def redirect(location: str, status: int = 302) -> Behaviour:
    return reply(status, b"", {"Location": location})


# -- the server ------------------------------------------------------------------------


@dataclass
class Route:
    method: str
    path: str
    behaviour: Behaviour
    match: Callable[[Request], bool] | None = None
    call_count: int = 0


class FaultServer:
    """A raw-socket HTTP/1.1 server on 127.0.0.1 that does what its routes say."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopping = threading.Event()
        # Reentrant: a route's ``match`` may call ``seen`` while ``_find`` holds it.
        self._lock = threading.RLock()
        self._routes: list[Route] = []
        self.requests: list[Request] = []
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FaultServer:
        thread = threading.Thread(target=self._accept, name="fault-server", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- routes --------------------------------------------------------------------------

    def route(self, method: str, path: str, behaviour: Behaviour,
              match: Callable[[Request], bool] | None = None) -> Route:  # fmt: skip
        found = Route(method.upper(), path, behaviour, match)
        with self._lock:
            self._routes.append(found)
        return found

    def unroute(self, route: Route) -> None:
        with self._lock:
            if route in self._routes:
                self._routes.remove(route)

    def seen(self, path: str | None = None, method: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]  # fmt: skip

    def _find(self, req: Request) -> Route | None:
        with self._lock:
            for route in reversed(self._routes):
                if (
                    route.method == req.method
                    and route.path == req.path
                    and (route.match is None or route.match(req))
                ):
                    route.call_count += 1
                    return route
        return None

    # -- serving -------------------------------------------------------------------------

    def _accept(self) -> None:
        self._listener.settimeout(0.1)  # close() does not wake accept(): look at stopping
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        conn = Conn(sock, self)
        buf = b""
        try:
            sock.settimeout(0.5)
            while not self.stopping.is_set() and not conn.closed:
                req, buf = self._read_request(sock, buf)
                if req is None:
                    return
                with self._lock:
                    self.requests.append(req)
                route = self._find(req)
                if route is None:
                    reply(404, b"not found")(conn, req)
                else:
                    route.behaviour(conn, req)
        except OSError:
            pass
        finally:
            with self._lock:
                if sock in self._socks:
                    self._socks.remove(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _read_request(self, sock: socket.socket, buf: bytes) -> tuple[Request | None, bytes]:
        while b"\r\n\r\n" not in buf:
            if self.stopping.is_set():
                return None, b""
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return None, b""
            buf += data
        raw_head, _, rest = buf.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
        headers = Headers()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            dict.__setitem__(headers, name.strip().lower(), value.strip())
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                return None, b""
            rest += data
        return Request(method, target, headers, rest[:length]), rest[length:]


# -- the three clouds --------------------------------------------------------------------

AWS_TOKEN = "AQAEAFakeToken=="
INSTANCE_ACTION = "/latest/meta-data/spot/instance-action"
TERMINATION_TIME = "/latest/meta-data/spot/termination-time"
TOKEN_PATH = "/latest/api/token"
IDENTITY = "/latest/dynamic/instance-identity/document"


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class Aws:
    """IMDS: a token service, the spot notice (404 until ``notice``), the identity.

    ``require_token``: GETs without a valid token get 401 (IMDSv2 required).
    """

    def __init__(self, server: FaultServer, *, require_token: bool = True,
                 instance_id: str = "i-0fault") -> None:  # fmt: skip
        self.server = server
        self.require_token = require_token
        self.instance_id = instance_id
        self._notice: bytes | None = None
        server.route("PUT", TOKEN_PATH, self._token)
        server.route("GET", INSTANCE_ACTION, self._instance_action)
        server.route("GET", TERMINATION_TIME, self._termination_time)
        server.route("GET", IDENTITY, self._identity)

    def notice(self, action: str = "terminate", seconds: float = 120.0,
               raw_time: str | None = None) -> None:  # fmt: skip
        """Serve a notice from now on (``raw_time`` as given, else now + ``seconds``)."""
        stamp = raw_time if raw_time is not None else iso(time.time() + seconds)
        self._notice = json.dumps({"action": action, "time": stamp}).encode()

    def notice_body(self, body: bytes) -> None:
        self._notice = body

    def _authorised(self, conn: Conn, req: Request) -> bool:
        if not self.require_token or req.headers.get("x-aws-ec2-metadata-token") == AWS_TOKEN:
            return True
        reply(401, b"")(conn, req)
        return False

    def _token(self, conn: Conn, req: Request) -> None:
        reply(200, AWS_TOKEN.encode())(conn, req)

    def _instance_action(self, conn: Conn, req: Request) -> None:
        if self._authorised(conn, req):
            if self._notice is None:
                reply(404, b"")(conn, req)
            else:
                reply(200, self._notice)(conn, req)

    def _termination_time(self, conn: Conn, req: Request) -> None:
        if self._authorised(conn, req):
            if self._notice is None:
                reply(404, b"")(conn, req)
            else:
                stamp = json.loads(self._notice).get("time", "")
                reply(200, str(stamp).encode())(conn, req)

    def _identity(self, conn: Conn, req: Request) -> None:
        if self._authorised(conn, req):
            doc = {"instanceId": self.instance_id, "instanceType": "m5.large",
                   "region": "eu-west-1", "availabilityZone": "eu-west-1a",
                   "accountId": "123456789012"}  # fmt: skip
            reply(200, json.dumps(doc).encode())(conn, req)


GCE = "/computeMetadata/v1/"
GCE_FLAVOR = {"Metadata-Flavor": "Google"}


class Google:
    """Google's metadata server: ``instance/preempted`` and ``maintenance-event`` with
    hanging GETs (``wait_for_change``, ``last_etag``, ``timeout_sec``), and the identity."""

    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self._cond = threading.Condition()
        self.values = {"instance/preempted": "FALSE", "instance/maintenance-event": "NONE",
                       "instance/id": "4520031799277581759",
                       "instance/machine-type": "projects/1/machineTypes/e2-small",
                       "instance/zone": "projects/1/zones/us-central1-a"}  # fmt: skip
        self._version = {k: 1 for k in self.values}
        for key in self.values:
            server.route("GET", GCE + key, self._value)

    def set(self, key: str, value: str) -> None:
        with self._cond:
            self.values[key] = value
            self._version[key] += 1
            self._cond.notify_all()

    def etag(self, key: str) -> str:
        return f"etag{self._version[key]:04d}"

    def _value(self, conn: Conn, req: Request) -> None:
        if req.headers.get("metadata-flavor") != "Google":
            reply(403, b"Missing Metadata-Flavor:Google header.", GCE_FLAVOR)(conn, req)
            return
        key = req.path[len(GCE):]
        query = req.query
        if query.get("wait_for_change") == "true":
            last = query.get("last_etag", "")
            until = time.monotonic() + float(query.get("timeout_sec", "60"))
            with self._cond:
                while self.etag(key) == last and not self.server.stopping.is_set():
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 0.5))
        with self._cond:
            value, etag = self.values[key], self.etag(key)
        reply(200, value.encode(), {**GCE_FLAVOR, "ETag": etag})(conn, req)


AZ_EVENTS = "/metadata/scheduledevents"
AZ_COMPUTE = "/metadata/instance/compute"


class Azure:
    """Azure's Scheduled Events and compute metadata (``Metadata: true`` required)."""

    def __init__(self, server: FaultServer, *, vm_name: str = "fault-vm") -> None:
        self.server = server
        self.vm_name = vm_name
        self.incarnation = 1
        self.events: list[dict[str, Any]] = []
        self.approvals: list[bytes] = []
        server.route("GET", AZ_EVENTS, self._events)
        server.route("POST", AZ_EVENTS, self._approve)
        server.route("GET", AZ_COMPUTE, self._compute)

    def preempt(self, seconds: float = 30.0, event_id: str = "602d9444-d2cd-49c7-8624-8643e7171297") -> None:  # noqa: E501
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + seconds))
        self.events = [{"EventId": event_id, "EventType": "Preempt",
                        "ResourceType": "VirtualMachine", "Resources": [self.vm_name],
                        "EventStatus": "Scheduled", "NotBefore": stamp,
                        "Description": "eviction", "EventSource": "Platform",
                        "DurationInSeconds": -1}]  # fmt: skip
        self.incarnation += 1

    def body(self) -> bytes:
        return json.dumps({"DocumentIncarnation": self.incarnation, "Events": self.events}).encode()

    def _ok(self, conn: Conn, req: Request) -> bool:
        if req.headers.get("metadata") == "true":
            return True
        reply(400, b'{"error": "Bad request"}')(conn, req)
        return False

    def _events(self, conn: Conn, req: Request) -> None:
        if self._ok(conn, req):
            reply(200, self.body(), {"Content-Type": "application/json"})(conn, req)

    def _approve(self, conn: Conn, req: Request) -> None:
        if self._ok(conn, req):
            self.approvals.append(req.body)
            reply(200, b"")(conn, req)

    def _compute(self, conn: Conn, req: Request) -> None:
        if self._ok(conn, req):
            doc = {"name": self.vm_name, "vmId": "0e6a3a6e-0000-4000-8000-000000000001",
                   "vmSize": "Standard_D2s_v3", "location": "westeurope", "zone": "1",
                   "subscriptionId": "sub-1"}  # fmt: skip
            reply(200, json.dumps(doc).encode())(conn, req)


def only(paths: Sequence[str]) -> Callable[[Request], bool]:
    """A route match: the request is for one of ``paths``."""
    wanted = set(paths)
    return lambda req: req.path in wanted
