"""A small fake of the Auto Scaling query API on 127.0.0.1, for lifecycle tests.

moto implements neither ``CompleteLifecycleAction`` nor
``RecordLifecycleActionHeartbeat``. This speaks the AWS query protocol (a
form-encoded POST with ``Action=...``, XML answers) well enough for a real
boto3 client with ``endpoint_url`` pointed at it, and records every call.

    with FakeAutoScaling() as fake:
        fake.add_instance("i-0123", group="web", hooks={"drain": 60})
        client = fake.client()      # a boto3 autoscaling client aimed at it
        ...
        fake.calls_of("CompleteLifecycleAction")

Failures are injected per action: ``fake.fail("CompleteLifecycleAction",
"access-denied", times=2)``; kinds are ``throttling``, ``access-denied``,
``no-such-hook`` (a ValidationError) and ``down`` (the connection is closed
without an answer). ``times=None`` fails until ``clear_failures()``.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

NAMESPACE = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
ACTIONS = (
    "DescribeAutoScalingInstances",
    "DescribeLifecycleHooks",
    "RecordLifecycleActionHeartbeat",
    "CompleteLifecycleAction",
)
FAILURE_KINDS = ("throttling", "access-denied", "no-such-hook", "down")
ACCOUNT = "123456789012"


@dataclass(frozen=True)
class Call:
    action: str
    params: dict[str, str]
    time: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived
    answered: str  # "ok" or the failure kind


@dataclass
class _Failure:
    kind: str
    times: int | None


@dataclass
class _State:
    groups: dict[str, str] = field(default_factory=dict)  # instance id -> group
    hooks: dict[tuple[str, str], int | None] = field(default_factory=dict)
    completed: dict[str, str] = field(default_factory=dict)  # instance id -> result
    failures: dict[str, list[_Failure]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)


class FakeAutoScaling:
    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval: close() (shutdown) waits up to one of them.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> FakeAutoScaling:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeAutoScaling:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setting up -------------------------------------------------------------
    def add_instance(
        self, instance_id: str, *, group: str, hooks: dict[str, int | None] | None = None
    ) -> None:
        """``instance_id`` in ``group``; ``hooks``: lifecycle hook name -> HeartbeatTimeout
        (None: the answer leaves it out)."""
        with self._lock:
            self._state.groups[instance_id] = group
            for name, timeout in (hooks or {}).items():
                self._state.hooks[(group, name)] = timeout

    def fail(self, action: str, kind: str, *, times: int | None = None) -> None:
        if action not in ACTIONS and action != "*":
            raise ValueError(f"unknown action {action}")
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure {kind}")
        with self._lock:
            self._state.failures.setdefault(action, []).append(_Failure(kind, times))

    def clear_failures(self) -> None:
        with self._lock:
            self._state.failures.clear()

    # -- looking -----------------------------------------------------------------
    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._state.calls)

    def calls_of(self, action: str, *, ok_only: bool = False) -> list[Call]:
        return [c for c in self.calls if c.action == action and (not ok_only or c.answered == "ok")]

    def completed(self, instance_id: str) -> str | None:
        with self._lock:
            return self._state.completed.get(instance_id)

    def client(self, region: str = "us-east-1", max_attempts: int = 1) -> Any:
        """A real boto3 autoscaling client aimed at this fake."""
        import boto3.session
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
        return session.client(
            "autoscaling",
            endpoint_url=self.url,
            config=Config(
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=2,
                read_timeout=2,
            ),
        )

    # -- answering ---------------------------------------------------------------
    def _take_failure(self, action: str) -> str | None:
        with self._lock:
            for key in (action, "*"):
                queue = self._state.failures.get(key, [])
                if not queue:
                    continue
                failure = queue[0]
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        queue.pop(0)
                return failure.kind
        return None

    def _record(self, action: str, params: dict[str, str], answered: str) -> None:
        with self._lock:
            self._state.calls.append(Call(action, params, time.monotonic(), time.time(), answered))

    def answer(self, action: str, params: dict[str, str]) -> tuple[int, str] | None:
        """(status, XML body), or None to drop the connection."""
        failure = self._take_failure(action)
        self._record(action, params, failure or "ok")
        if failure == "down":
            return None
        if failure == "throttling":
            return 400, _error("Throttling", "Rate exceeded")
        if failure == "access-denied":
            return 403, _error(
                "AccessDenied",
                f"User: arn:aws:sts::{ACCOUNT}:assumed-role/spotwatch/i-0 is not authorized "
                f"to perform: autoscaling:{action} because no identity-based policy "
                "allows the autoscaling:" + action + " action",
            )
        if failure == "no-such-hook":
            return 400, _error("ValidationError", "No Lifecycle Hook found.")
        handler = getattr(self, f"_do_{action}", None)
        if handler is None:
            return 400, _error("InvalidAction", f"Could not find operation {action}")
        result: tuple[int, str] = handler(params)
        return result

    def _do_DescribeAutoScalingInstances(self, params: dict[str, str]) -> tuple[int, str]:
        wanted = [v for k, v in sorted(params.items()) if k.startswith("InstanceIds.member.")]
        members = []
        with self._lock:
            for instance_id in wanted:
                group = self._state.groups.get(instance_id)
                if group is None:
                    continue
                members.append(
                    "<member>"
                    f"<InstanceId>{escape(instance_id)}</InstanceId>"
                    f"<AutoScalingGroupName>{escape(group)}</AutoScalingGroupName>"
                    "<AvailabilityZone>us-east-1a</AvailabilityZone>"
                    "<LifecycleState>Terminating:Wait</LifecycleState>"
                    "<HealthStatus>HEALTHY</HealthStatus>"
                    "<ProtectedFromScaleIn>false</ProtectedFromScaleIn>"
                    "</member>"
                )
        inner = f"<AutoScalingInstances>{''.join(members)}</AutoScalingInstances>"
        return 200, _ok("DescribeAutoScalingInstances", inner)

    def _do_DescribeLifecycleHooks(self, params: dict[str, str]) -> tuple[int, str]:
        group = params.get("AutoScalingGroupName", "")
        names = {v for k, v in params.items() if k.startswith("LifecycleHookNames.member.")}
        members = []
        with self._lock:
            for (g, name), timeout in sorted(self._state.hooks.items()):
                if g != group or (names and name not in names):
                    continue
                beat = "" if timeout is None else f"<HeartbeatTimeout>{timeout}</HeartbeatTimeout>"
                members.append(
                    "<member>"
                    f"<LifecycleHookName>{escape(name)}</LifecycleHookName>"
                    f"<AutoScalingGroupName>{escape(g)}</AutoScalingGroupName>"
                    "<LifecycleTransition>autoscaling:EC2_INSTANCE_TERMINATING"
                    "</LifecycleTransition>"
                    f"{beat}<GlobalTimeout>172800</GlobalTimeout>"
                    "<DefaultResult>CONTINUE</DefaultResult>"
                    "</member>"
                )
        return 200, _ok(
            "DescribeLifecycleHooks", f"<LifecycleHooks>{''.join(members)}</LifecycleHooks>"
        )

    def _check_action(self, params: dict[str, str]) -> tuple[int, str] | None:
        group = params.get("AutoScalingGroupName", "")
        hook = params.get("LifecycleHookName", "")
        instance_id = params.get("InstanceId", "")
        with self._lock:
            if (group, hook) not in self._state.hooks:
                return 400, _error("ValidationError", "No Lifecycle Hook found.")
            if instance_id and self._state.groups.get(instance_id) != group:
                return 400, _error(
                    "ValidationError",
                    f"No active Lifecycle Action found with instance ID {instance_id}",
                )
            if instance_id in self._state.completed:
                return 400, _error(
                    "ValidationError",
                    f"No active Lifecycle Action found with instance ID {instance_id}",
                )
        return None

    def _do_RecordLifecycleActionHeartbeat(self, params: dict[str, str]) -> tuple[int, str]:
        refused = self._check_action(params)
        if refused is not None:
            return refused
        return 200, _ok("RecordLifecycleActionHeartbeat", "")

    def _do_CompleteLifecycleAction(self, params: dict[str, str]) -> tuple[int, str]:
        refused = self._check_action(params)
        if refused is not None:
            return refused
        result = params.get("LifecycleActionResult", "")
        if result not in ("CONTINUE", "ABANDON"):
            return 400, _error("ValidationError", f"Invalid LifecycleActionResult {result}")
        with self._lock:
            self._state.completed[params.get("InstanceId", "")] = result
        return 200, _ok("CompleteLifecycleAction", "")


def _ok(action: str, inner: str) -> str:
    return (
        f'<{action}Response xmlns="{NAMESPACE}">'
        f"<{action}Result>{inner}</{action}Result>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )


def _error(code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def _handler_for(fake: FakeAutoScaling) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            params = {k: v[0] for k, v in form.items()}
            action = params.pop("Action", "")
            params.pop("Version", None)
            answer = fake.answer(action, params)
            if answer is None:
                self.close_connection = True
                self.connection.close()
                return
            status, body = answer
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
