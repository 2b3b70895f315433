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
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from spotwatch.simserver import Reply, SimBase

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


@dataclass
class _Scheduled:
    appear_at: float
    body: dict[str, str] = field(default_factory=dict)
    raw_time: str = ""
    action: str = ""


class ImdsSimulator(SimBase):
    """A fake IMDS on 127.0.0.1; see the module docstring.

    ``clock`` (monotonic) drives token expiry, ``wall_clock`` (epoch) decides
    when scheduled notices become visible and stamps the request log.
    """

    faults = FAULTS
    server_name = "EC2ws"
    idle_seconds = 30.0
    thread_prefix = "imdssim"
    oversize_bytes = 256 * 1024  # the "oversize" fault's body; set on an instance to change

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        require_token: bool = False,
        hang_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            host=host, port=port, wall_clock=wall_clock, hang_seconds=hang_seconds
        )  # fmt: skip
        self._clock = clock
        self._require_token = require_token
        self._tokens: dict[str, float] = {}
        self._notice: _Scheduled | None = None
        self._rebalance: _Scheduled | None = None
        self._lifecycle: list[tuple[float, str]] = []  # (from, state), in time order
        self._events: dict[str, list[_EventVersion]] = {}  # EventId -> its versions
        self._first_served: float | None = None
        self._identity = dict(DEFAULT_IDENTITY)
        if identity:
            self._identity.update(identity)

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

    def revoke_tokens(self) -> None:
        """Forget every token issued so far: their holders get 401 from now on."""
        with self._cond:
            self._tokens.clear()

    # -- observation (and SimBase's requests, count, wait_for_requests) -------------

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

    def fault_applies(self, kind: str, only: str | None, method: str, path: str) -> bool:
        if kind in _TOKEN_ONLY:
            return method == "PUT" and path == TOKEN_PATH
        if kind in _GET_ONLY:
            return method == "GET" and path == (only or INSTANCE_ACTION_PATH)
        return only is None or only == path

    def refuse(self, method: str, path: str, headers: Mapping[str, str]) -> Reply | None:
        if "x-forwarded-for" in headers:
            return _reply(403, b"Forbidden\n")
        return None

    def answer(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes, fault: str) -> Reply:  # fmt: skip
        with self._cond:
            if fault:
                return self._fault_reply(fault, path)
            if path == TOKEN_PATH:
                if method != "PUT":
                    return _reply(405, b"Method Not Allowed\n")
                return self._issue_token(headers.get(TTL_HEADER.lower(), ""))
            if method != "GET":
                return _reply(405, b"Method Not Allowed\n")
            token = headers.get(TOKEN_HEADER.lower())
            if token is not None or self._require_token:
                expires = self._tokens.get(token or "")
                if expires is None or self._clock() >= expires:
                    return _reply(401, b"Unauthorized\n")
            return self._content(path)

    def _fault_reply(self, fault: str, path: str) -> Reply:
        if fault in ("500", "503", "429"):
            return _reply(int(fault), f"fault {fault}\n".encode(), fault=fault)
        if fault in ("drop", "reset", "hang"):
            return _reply(0, b"", fault=fault)
        if fault == "invalid-json":
            return _reply(200, b'{"action": "terminate", "time": ', fault=fault)
        if fault == "no-time":
            return _reply(200, b'{"action": "stop"}', fault=fault)
        if fault == "redirect":
            return _reply(302, b"", fault=fault, location=f"{self.url}/latest/redirected")
        if fault == "oversize":
            return _reply(200, b"x" * self.oversize_bytes, fault=fault)
        return _reply(int(fault.split("-")[1]), b"Not Found\n", fault=fault)  # token-404/405

    def _issue_token(self, ttl_header: str) -> Reply:
        ttl = int(ttl_header) if ttl_header.strip().isdigit() else 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return _reply(400, b"Bad Request: token TTL must be 1..21600\n")
        now = self._clock()
        if len(self._tokens) > 64:  # keep the table small over long runs
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = secrets.token_urlsafe(40)
        self._tokens[token] = now + ttl
        return _reply(200, token.encode(), headers={TTL_HEADER: str(ttl)})

    def _content(self, path: str) -> Reply:
        now = self._wall()
        notice = self._notice if self._notice and now >= self._notice.appear_at else None
        if path == INSTANCE_ACTION_PATH and notice is not None:
            if self._first_served is None:
                self._first_served = now
            return _reply(200, json.dumps(notice.body).encode())
        if path == TERMINATION_TIME_PATH and notice is not None and notice.action == "terminate":
            return _reply(200, notice.raw_time.encode())
        rebalance = self._rebalance
        if path == REBALANCE_PATH and rebalance is not None and now >= rebalance.appear_at:
            return _reply(200, json.dumps(rebalance.body).encode())
        if path == LIFECYCLE_PATH:
            states = [state for at, state in self._lifecycle if at <= now]
            if states:
                return _reply(200, states[-1].encode())
        if path in (MAINTENANCE_SCHEDULED_PATH, MAINTENANCE_HISTORY_PATH):
            return _reply(200, self._maintenance(path, now))
        if path == IDENTITY_PATH:
            return _reply(200, json.dumps(self._identity, indent=2).encode())
        if path == INSTANCE_ID_PATH:
            return _reply(200, str(self._identity.get("instanceId", "")).encode())
        return _reply(404, _NOT_FOUND, content_type="text/html")

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


def _reply(
    status: int,
    body: bytes,
    *,
    fault: str = "",
    location: str = "",
    content_type: str = "text/plain",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An answer as IMDS sends it: always a Content-Type; status 0: none at all."""
    extra = {"Location": location} if location else {}
    return Reply(status, body, {"Content-Type": content_type, **extra, **(headers or {})}, fault)


def main(argv: list[str] | None = None) -> int:
    """Serve a simulated metadata service until Ctrl-C: ``python -m spotwatch.imdssim``,
    the same options as ``spotwatch sim`` (declared once, in its front end)."""
    from spotwatch.commands import sim_cmd as command
    from spotwatch.errors import SpotwatchError

    parser = argparse.ArgumentParser(prog="python -m spotwatch.imdssim",
                                     description=command.DESCRIPTION)
    command.add_arguments(parser)
    try:
        return command.serve_until_stopped(parser.parse_args(argv))
    except SpotwatchError as err:
        print(f"imdssim: {err}", file=sys.stderr)
        return err.exit_code


class _RunnableModule(types.ModuleType):
    """``SHIV_MODULE=spotwatch.imdssim`` (the one-file install) calls the module itself."""

    def __call__(self) -> int:
        return main()


sys.modules[__name__].__class__ = _RunnableModule

if __name__ == "__main__":
    sys.exit(main())
