"""Auto Scaling lifecycle calls, for the instance side (``--asg-lifecycle-hook``)
and the fleet side alike.

``client`` is a boto3 ``autoscaling`` client made by the caller (``make_client``
makes one with the endpoint override tests use). boto3 is imported only inside
the functions that create clients or inspect its errors: importing this module
costs the idle ``spotwatch run`` nothing.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any, Callable

# The environment variables that point the Auto Scaling client elsewhere (tests:
# the fake on 127.0.0.1). Read here rather than left to botocore, which only
# reads them from 1.31.68 on; pyproject allows older.
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_AUTO_SCALING", "AWS_ENDPOINT_URL")

# Used when DescribeLifecycleHooks cannot be read: the shortest HeartbeatTimeout
# Auto Scaling allows is 30 s, so a heartbeat every 15 s never lets it lapse.
FALLBACK_HEARTBEAT_SECONDS = 15.0

_ACCESS_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "NotAuthorized"}
)
_PERFORM = re.compile(r"perform:?\s+([A-Za-z0-9-]+:[A-Za-z0-9]+)")


def endpoint_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """The Auto Scaling endpoint override from the environment, or None."""
    for name in ENDPOINT_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def make_client(
    region: str | None,
    *,
    endpoint: str | None = None,
    timeout: float = 5.0,
    max_attempts: int = 2,
) -> Any:
    """An ``autoscaling`` client with short timeouts: callers retry on their own
    schedule, within a deadline, so botocore's long retry ladder is cut short."""
    import boto3.session
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
    )
    session = boto3.session.Session()
    return session.client(
        "autoscaling",
        region_name=region if region and region != "unknown" else None,
        endpoint_url=endpoint,
        config=config,
    )


def find_group(client: Any, instance_id: str) -> str | None:
    """The Auto Scaling group ``instance_id`` belongs to (DescribeAutoScalingInstances)."""
    answer = client.describe_auto_scaling_instances(InstanceIds=[instance_id])
    for item in answer.get("AutoScalingInstances", []):
        if item.get("InstanceId") == instance_id:
            name = item.get("AutoScalingGroupName")
            return str(name) if name else None
    return None


def heartbeat_timeout(client: Any, group: str, hook: str) -> float | None:
    """The hook's ``HeartbeatTimeout`` in seconds (DescribeLifecycleHooks); None if
    the hook is not on the group or has no timeout given."""
    answer = client.describe_lifecycle_hooks(AutoScalingGroupName=group, LifecycleHookNames=[hook])
    for item in answer.get("LifecycleHooks", []):
        if item.get("LifecycleHookName") == hook and item.get("HeartbeatTimeout") is not None:
            return float(item["HeartbeatTimeout"])
    return None


def heartbeat_interval(timeout: float | None) -> float:
    """Half the hook's heartbeat timeout (15 s when it is unknown)."""
    if timeout is None or timeout <= 0:
        return FALLBACK_HEARTBEAT_SECONDS
    return timeout / 2


def _target(group: str, hook: str, instance_id: str | None, token: str | None) -> dict[str, str]:
    if instance_id is None and token is None:
        raise ValueError("a lifecycle action needs an instance id or a token")
    params = {"AutoScalingGroupName": group, "LifecycleHookName": hook}
    if instance_id is not None:
        params["InstanceId"] = instance_id
    if token is not None:
        params["LifecycleActionToken"] = token
    return params


def record_heartbeat(
    client: Any,
    *,
    group: str,
    hook: str,
    instance_id: str | None = None,
    token: str | None = None,
) -> None:
    """RecordLifecycleActionHeartbeat: restart the hook's heartbeat timeout."""
    client.record_lifecycle_action_heartbeat(**_target(group, hook, instance_id, token))


def complete_action(
    client: Any,
    *,
    group: str,
    hook: str,
    result: str = "CONTINUE",
    instance_id: str | None = None,
    token: str | None = None,
) -> None:
    """CompleteLifecycleAction: let the group go on (CONTINUE) or abandon (ABANDON)."""
    client.complete_lifecycle_action(
        LifecycleActionResult=result, **_target(group, hook, instance_id, token)
    )


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError; the class name otherwise."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


def missing_permission(error: BaseException) -> str | None:
    """The IAM action an access-denied error names (``autoscaling:CompleteLifecycleAction``),
    or None when ``error`` is not an access denial."""
    if error_code(error) not in _ACCESS_DENIED:
        return None
    response = getattr(error, "response", None)
    message = ""
    if isinstance(response, dict):
        message = str(response.get("Error", {}).get("Message", ""))
    found = _PERFORM.search(message)
    if found:
        return found.group(1)
    operation = getattr(error, "operation_name", None)
    return f"autoscaling:{operation}" if operation else "autoscaling:*"


class Heartbeater:
    """Sends ``beat()`` every ``interval`` seconds on a daemon thread until stopped.

    A failing beat is handed to ``on_error`` and the beats go on: the next may
    succeed, and the hooks never wait on any of it.
    """

    def __init__(
        self,
        beat: Callable[[], None],
        interval: float,
        *,
        on_error: Callable[[BaseException], None] | None = None,
        on_beat: Callable[[], None] | None = None,
        name: str = "spotwatch-heartbeat",
    ) -> None:
        self._beat = beat
        self.interval = interval
        self._on_error = on_error
        self._on_beat = on_beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.beats = 0

    def start(self) -> Heartbeater:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception as exc:
                if self._on_error is not None:
                    self._on_error(exc)
                continue
            self.beats += 1
            if self._on_beat is not None:
                self._on_beat()
