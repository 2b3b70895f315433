"""An IMDS simulator: a real HTTP server on 127.0.0.1 with scheduled notices and faults.

Used by the tests, ``spotwatch drill`` and the benchmarks. Controlled from the
same process, thread-safely::

    with ImdsSimulator(require_token=True) as sim:
        sim.schedule_notice("terminate", appear_at=time.time() + 2)
        sim.inject("503", count=2)
        ...  # point an ImdsClient at sim.url
        sim.wait_for_requests(INSTANCE_ACTION_PATH, 3)

Standalone, for manual runs: ``spotwatch sim --port 1338 --notice-in 10`` (or
``python -m spotwatch.imdssim``, the same options).
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import struct
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

TOKEN_PATH = "/latest/api/token"
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
TERMINATION_TIME_PATH = "/latest/meta-data/spot/termination-time"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
LIFECYCLE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"
MAINTENANCE_SCHEDULED_PATH = "/latest/meta-data/events/maintenance/scheduled"
MAINTENANCE_HISTORY_PATH = "/latest/meta-data/events/maintenance/history"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

FAULTS = (
    "500",  # answer 500 Internal Server Error
    "503",  # answer 503 Service Unavailable
    "429",  # answer 429 Too Many Requests
    "drop",  # close the connection without an answer
    "reset",  # reset the connection (RST) without an answer
    "hang",  # say nothing for hang_seconds (cut short by stop()), then close
    "invalid-json",  # GET: 200 with a body that is not JSON (default path: instance-action)
    "no-time",  # GET: 200 with JSON lacking a time (default path: instance-action)
    "redirect",  # answer 302 to another path on this server
    "oversize",  # answer 200 with oversize_bytes of body
    "token-404",  # PUT /latest/api/token: 404 (no token endpoint)
    "token-405",  # PUT /latest/api/token: 405
)
_GET_ONLY = frozenset({"invalid-json", "no-time"})
_TOKEN_ONLY = frozenset({"token-404", "token-405"})

DEFAULT_IDENTITY: dict[str, Any] = {
    "accountId": "123456789012",
    "architecture": "x86_64",
    "availabilityZone": "us-east-1a",
    "imageId": "ami-0123456789abcdef0",
    "instanceId": "i-0123456789abcdef0",
    "instanceType": "m5.large",
    "pendingTime": "2026-01-01T00:00:00Z",
    "privateIp": "10.0.0.10",
    "region": "us-east-1",
    "version": "2017-09-30",
}

_NOT_FOUND = (
    b'<?xml version="1.0" encoding="iso-8859-1"?>\n'
    b"<html><head><title>404 - Not Found</title></head>"
    b"<body><h1>404 - Not Found</h1></body></html>\n"
)


def format_time(epoch: float) -> str:
    """``epoch`` as IMDS writes times: RFC 3339, UTC, whole seconds."""
    return time.strftime(TIME_FORMAT, time.gmtime(epoch))


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_event_time(epoch: float) -> str:
    """``epoch`` as maintenance events write times: ``21 Jan 2019 09:00:43 GMT``."""
    t = time.gmtime(epoch)
    clock = f"{t.tm_hour:02}:{t.tm_min:02}:{t.tm_sec:02}"
    return f"{t.tm_mday} {_MONTHS[t.tm_mon - 1]} {t.tm_year} {clock} GMT"


@dataclass(frozen=True)
class _EventVersion:
    """What a maintenance event looks like from ``at`` on (until a later version)."""

    at: float
    event: Mapping[str, str]


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator saw. ``status`` is 0 when it sent no answer."""

    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased
    status: int
    wall_time: float
    fault: str = ""


@dataclass
class _Fault:
    kind: str
    remaining: int | None  # None: until cleared
    path: str | None

    def matches(self, method: str, path: str) -> bool:
        if self.kind in _TOKEN_ONLY:
            return method == "PUT" and path == TOKEN_PATH
        if self.kind in _GET_ONLY:
            return method == "GET" and path == (self.path or INSTANCE_ACTION_PATH)
        return self.path is None or self.path == path


@dataclass
class _Scheduled:
    appear_at: float
    body: dict[str, str] = field(default_factory=dict)
    raw_time: str = ""
    action: str = ""


class ImdsSimulator:
    """A fake IMDS on 127.0.0.1; see the module docstring.

    ``clock`` (monotonic) drives token expiry, ``wall_clock`` (epoch) decides
    when scheduled notices become visible and stamps the request log.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        require_token: bool = False,
        hang_seconds: float = 5.0,
        oversize_bytes: int = 256 * 1024,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        identity: Mapping[str, Any] | None = None,
        max_log: int = 100_000,
    ) -> None:
        self._host = host
        self._port = port
        self._clock = clock
        self._wall = wall_clock
        self.hang_seconds = hang_seconds
        self.oversize_bytes = oversize_bytes
        self._cond = threading.Condition(threading.Lock())
        self._require_token = require_token
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._notice: _Scheduled | None = None
        self._rebalance: _Scheduled | None = None
        self._lifecycle: list[tuple[float, str]] = []  # (from, state), in time order
        self._events: dict[str, list[_EventVersion]] = {}  # EventId -> its versions
        self._first_served: float | None = None
        self._identity = dict(DEFAULT_IDENTITY)
        if identity:
            self._identity.update(identity)
        # Bounded, for long standalone runs; counts (and waits) are exact regardless.
        self._log: deque[RequestRecord] = deque(maxlen=max_log)
        self._counts: dict[tuple[str, str], int] = {}
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------

    def start(self) -> ImdsSimulator:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._closing.clear()
        server = _Server((self._host, self._port), _Handler)
        server.sim = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = f"imdssim:{self.port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()  # releases hanging handlers
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

    def __enter__(self) -> ImdsSimulator:
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

    # -- control -----------------------------------------------------------------

    @property
    def require_token(self) -> bool:
        return self._require_token

    @require_token.setter
    def require_token(self, value: bool) -> None:
        with self._cond:
            self._require_token = value

    def schedule_notice(
        self,
        action: str = "terminate",
        appear_at: float | None = None,
        notice_time: str | None = None,
    ) -> None:
        """Serve an interruption notice from ``appear_at`` (epoch; default now).

        ``notice_time`` is served verbatim; by default ``appear_at`` + 120 s.
        """
        at = self._wall() if appear_at is None else appear_at
        raw = notice_time if notice_time is not None else format_time(at + 120)
        with self._cond:
            self._notice = _Scheduled(at, {"action": action, "time": raw}, raw, action)
            self._first_served = None

    def clear_notice(self) -> None:
        with self._cond:
            self._notice = None
            self._first_served = None

    def schedule_rebalance(
        self, appear_at: float | None = None, notice_time: str | None = None
    ) -> None:
        """Serve a rebalance recommendation from ``appear_at`` (default now)."""
        at = self._wall() if appear_at is None else appear_at
        raw = notice_time if notice_time is not None else format_time(at)
        with self._cond:
            self._rebalance = _Scheduled(at, {"noticeTime": raw}, raw)

    def clear_rebalance(self) -> None:
        with self._cond:
            self._rebalance = None

    def schedule_lifecycle_state(self, state: str, at: float | None = None) -> None:
        """Serve ``state`` (e.g. ``Terminated``; any text) on target-lifecycle-state
        from ``at`` (epoch; default now). 404 before the first state."""
        when = self._wall() if at is None else at
        with self._cond:
            self._lifecycle.append((when, state))
            self._lifecycle.sort(key=lambda item: item[0])

    def schedule_maintenance(
        self,
        event_id: str,
        not_before: float,
        *,
        code: str = "system-reboot",
        at: float | None = None,
        not_after: float | None = None,
        description: str = "scheduled maintenance",
    ) -> None:
        """List an active maintenance event from ``at`` (default now). Called again with
        the same ``event_id``: a reschedule from ``at`` (the new ``not_before``)."""
        event = {
            "NotBefore": format_event_time(not_before),
            "Code": code,
            "Description": description,
            "EventId": event_id,
            "State": "active",
        }
        if not_after is not None:
            event["NotAfter"] = format_event_time(not_after)
        self._add_version(event_id, event, at)

    def end_maintenance(
        self, event_id: str, state: str = "canceled", at: float | None = None
    ) -> None:
        """From ``at`` (default now), ``event_id`` leaves the scheduled list for the
        history, ``canceled`` or ``completed``."""
        with self._cond:
            versions = self._events.get(event_id)
            if not versions:
                raise KeyError(event_id)
            event = dict(versions[-1].event, State=state)
        self._add_version(event_id, event, at)

    def _add_version(self, event_id: str, event: Mapping[str, str], at: float | None) -> None:
        when = self._wall() if at is None else at
        with self._cond:
            versions = self._events.setdefault(event_id, [])
            versions.append(_EventVersion(when, dict(event)))
            versions.sort(key=lambda v: v.at)

    def set_identity(self, **fields: Any) -> None:
        """Override identity document fields, e.g. ``instanceId="i-1"``."""
        with self._cond:
            self._identity.update(fields)

    def inject(self, fault: str, *, count: int | None = 1, path: str | None = None) -> None:
        """Apply ``fault`` (see FAULTS) to the next ``count`` matching requests (None: until
        cleared), optionally only to requests for ``path``."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for until cleared")
        with self._cond:
            self._faults.append(_Fault(fault, count, path))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def revoke_tokens(self) -> None:
        """Forget every token issued so far: their holders get 401 from now on."""
        with self._cond:
            self._tokens.clear()

    # -- observation ---------------------------------------------------------------

    def requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        with self._cond:
            return [
                r
                for r in self._log
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    def count(self, path: str, method: str = "GET") -> int:
        with self._cond:
            return self._counts.get((method, path), 0)

    def wait_for_requests(
        self, path: str, count: int, *, method: str = "GET", timeout: float = 10.0
    ) -> list[RequestRecord]:
        """Block until ``count`` requests for ``path`` were answered (or not); TimeoutError."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._counts.get((method, path), 0) >= count, timeout=timeout
            )
            seen = self._counts.get((method, path), 0)
        if not ok:
            raise TimeoutError(f"saw {seen} of {count} {method} {path} within {timeout:g} s")
        return self.requests(path, method)

    @property
    def notice_visible_at(self) -> float | None:
        """Wall time the scheduled notice became (or becomes) visible, if any."""
        with self._cond:
            return self._notice.appear_at if self._notice is not None else None

    @property
    def first_notice_served_at(self) -> float | None:
        """Wall time of the first GET of instance-action that returned the notice."""
        with self._cond:
            return self._first_served

    def wait_for_notice_served(self, timeout: float = 10.0) -> float:
        """Block until a client has read the notice; its wall time. TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._first_served is not None, timeout=timeout):
                raise TimeoutError(f"nobody read the notice within {timeout:g} s")
            assert self._first_served is not None
            return self._first_served

    # -- serving (called from handler threads) ---------------------------------------

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _decide(self, method: str, path: str, headers: Mapping[str, str]) -> _Reply:
        """What to answer; also logs the request. Runs under the lock, so it is quick."""
        received = self._wall()
        with self._cond:
            reply = self._reply(method, path, headers)
            self._log.append(
                RequestRecord(method, path, headers, reply.status, received, reply.fault)
            )
            key = (method, path)
            self._counts[key] = self._counts.get(key, 0) + 1
            if reply.notice and self._first_served is None:
                self._first_served = received
            self._cond.notify_all()
        return reply

    def _reply(self, method: str, path: str, headers: Mapping[str, str]) -> _Reply:
        if "x-forwarded-for" in headers:
            return _Reply(403, b"Forbidden\n")
        fault = self._take_fault(method, path)
        if fault:
            return self._fault_reply(fault, path)
        if path == TOKEN_PATH:
            if method != "PUT":
                return _Reply(405, b"Method Not Allowed\n")
            return self._issue_token(headers.get(TTL_HEADER.lower(), ""))
        if method != "GET":
            return _Reply(405, b"Method Not Allowed\n")
        token = headers.get(TOKEN_HEADER.lower())
        if token is not None or self._require_token:
            expires = self._tokens.get(token or "")
            if expires is None or self._clock() >= expires:
                return _Reply(401, b"Unauthorized\n")
        return self._content(path)

    def _take_fault(self, method: str, path: str) -> str:
        for fault in self._faults:
            if fault.matches(method, path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault.kind
        return ""

    def _fault_reply(self, fault: str, path: str) -> _Reply:
        if fault in ("500", "503", "429"):
            return _Reply(int(fault), f"fault {fault}\n".encode(), fault=fault)
        if fault in ("drop", "reset", "hang"):
            return _Reply(0, b"", fault=fault)
        if fault == "invalid-json":
            return _Reply(200, b'{"action": "terminate", "time": ', fault=fault)
        if fault == "no-time":
            return _Reply(200, b'{"action": "stop"}', fault=fault)
        if fault == "redirect":
            return _Reply(302, b"", fault=fault, location=f"{self.url}/latest/redirected")
        if fault == "oversize":
            return _Reply(200, b"x" * self.oversize_bytes, fault=fault)
        return _Reply(int(fault.split("-")[1]), b"Not Found\n", fault=fault)  # token-404/405

    def _issue_token(self, ttl_header: str) -> _Reply:
        ttl = int(ttl_header) if ttl_header.strip().isdigit() else 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return _Reply(400, b"Bad Request: token TTL must be 1..21600\n")
        now = self._clock()
        if len(self._tokens) > 64:  # keep the table small over long runs
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = secrets.token_urlsafe(40)
        self._tokens[token] = now + ttl
        return _Reply(200, token.encode(), headers={TTL_HEADER: str(ttl)})

    def _content(self, path: str) -> _Reply:
        now = self._wall()
        notice = self._notice if self._notice and now >= self._notice.appear_at else None
        if path == INSTANCE_ACTION_PATH and notice is not None:
            return _Reply(200, json.dumps(notice.body).encode(), notice=True)
        if path == TERMINATION_TIME_PATH and notice is not None and notice.action == "terminate":
            return _Reply(200, notice.raw_time.encode())
        rebalance = self._rebalance
        if path == REBALANCE_PATH and rebalance is not None and now >= rebalance.appear_at:
            return _Reply(200, json.dumps(rebalance.body).encode())
        if path == LIFECYCLE_PATH:
            states = [state for at, state in self._lifecycle if at <= now]
            if states:
                return _Reply(200, states[-1].encode())
        if path in (MAINTENANCE_SCHEDULED_PATH, MAINTENANCE_HISTORY_PATH):
            return _Reply(200, self._maintenance(path, now))
        if path == IDENTITY_PATH:
            return _Reply(200, json.dumps(self._identity, indent=2).encode())
        if path == INSTANCE_ID_PATH:
            return _Reply(200, str(self._identity.get("instanceId", "")).encode())
        return _Reply(404, _NOT_FOUND, content_type="text/html")

    def _maintenance(self, path: str, now: float) -> bytes:
        listed = []
        for versions in self._events.values():
            current = [v.event for v in versions if v.at <= now]
            if not current:
                continue
            active = current[-1].get("State") == "active"
            if active == (path == MAINTENANCE_SCHEDULED_PATH):
                listed.append(current[-1])
        return json.dumps(listed, indent=2).encode()


@dataclass(frozen=True)
class _Reply:
    status: int  # 0: no answer at all (drop, reset, hang)
    body: bytes
    fault: str = ""
    location: str = ""
    notice: bool = False  # this answer reveals the interruption notice
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: ImdsSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (timeouts, body cap) are normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like IMDS: idle polls reuse one connection
    server_version = "EC2ws"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
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

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is the record; stderr stays quiet

    def _serve(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        if length.isdigit() and 0 < int(length) <= 65536:
            self.rfile.read(int(length))
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        sim = self.server.sim
        reply = sim._decide(method, path, headers)
        if reply.status == 0:
            self._no_answer(reply.fault)
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            if reply.location:
                self.send_header("Location", reply.location)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client went away (e.g. body cap)

    def _no_answer(self, fault: str) -> None:
        self.close_connection = True
        if fault == "hang":
            self.server.sim._closing.wait(self.server.sim.hang_seconds)
        elif fault == "reset":
            # Linger 0: close() sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def main(argv: list[str] | None = None) -> int:
    """Serve a simulated IMDS until Ctrl-C: ``python -m spotwatch.imdssim``, the
    same options as ``spotwatch sim`` (declared once, in its front end)."""
    from spotwatch.commands import sim as command
    from spotwatch.errors import SpotwatchError

    parser = argparse.ArgumentParser(prog="python -m spotwatch.imdssim",
                                     description=command.DESCRIPTION)
    command.add_arguments(parser)
    try:
        return serve_until_stopped(parser.parse_args(argv))
    except SpotwatchError as err:
        print(f"imdssim: {err}", file=sys.stderr)
        return err.exit_code


def serve_until_stopped(args: argparse.Namespace) -> int:
    """Start the simulator ``args.cloud`` names, print its URL, serve until SIGTERM/SIGINT."""
    from spotwatch.errors import SpotwatchError

    sim: Any
    try:
        if args.cloud == "gcp":
            from spotwatch import imdssim_gcp

            sim = imdssim_gcp.serve(args.port, args.notice_in, None, "")
        elif args.cloud == "azure":
            from spotwatch import imdssim_azure

            sim = imdssim_azure.serve(args.port, args.notice_in, "Preempt", args.lead)
        else:
            sim = ImdsSimulator(host=args.host, port=args.port, require_token=args.require_token)
            sim.start()
    except (OSError, OverflowError) as err:
        raise SpotwatchError(f"cannot listen on {args.host}:{args.port}: {err}") from None
    now = time.time()
    if args.cloud == "aws" and args.notice_in is not None:
        at = now + args.notice_in
        sim.schedule_notice(args.action, at, format_time(at + args.lead))
    if args.cloud == "aws" and args.rebalance_in is not None:
        sim.schedule_rebalance(now + args.rebalance_in)
    if args.cloud == "aws" and args.asg_terminated_in is not None:
        sim.schedule_lifecycle_state("InService", now)
        sim.schedule_lifecycle_state("Terminated", now + args.asg_terminated_in)
    if args.cloud == "aws" and args.maintenance_in is not None:
        sim.schedule_maintenance(
            "instance-event-0123456789abcdef0",
            now + args.maintenance_in,
            code=args.maintenance_code,
        )
    from spotwatch.stopper import Stopper

    # Routed before the URL is printed: whoever reads it may send SIGTERM at once.
    with Stopper() as stop:
        print(sim.url, flush=True)
        try:
            while not stop.wait():
                pass
        finally:
            sim.stop()
    return 0


class _RunnableModule(types.ModuleType):
    """``SHIV_MODULE=spotwatch.imdssim`` (the one-file install) calls the module itself."""

    def __call__(self) -> int:
        return main()


sys.modules[__name__].__class__ = _RunnableModule

if __name__ == "__main__":
    sys.exit(main())
