"""Auto Scaling termination: the ``autoscaling/target-lifecycle-state`` monitor and,
with ``--asg-lifecycle-hook``, the lifecycle follow-up around the hooks.

``Terminated`` is a notice (``asg-termination``, action ``terminate``); 404 and
every other state are nothing; an answer that is no known state is logged once
and treated as nothing (the path answers 200 in normal times).

The follow-up works on a thread of its own, so the hooks never wait on AWS:
it finds the group (``--asg-name`` or ``DescribeAutoScalingInstances``; the
first hook waits for that at most ``LOOKUP_WAIT`` seconds, to give hooks
``SPOTWATCH_ASG_NAME``), reads the hook's ``HeartbeatTimeout``, sends
``RecordLifecycleActionHeartbeat`` every half of it (15 s when unknown) while the
hooks run, then ``CompleteLifecycleAction`` with ``CONTINUE``. API errors are
retried until the notice's deadline and logged once each, with the IAM
permission that is missing. boto3 is imported on that thread, for the first
Auto Scaling notice: never on the idle path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

from spotwatch import lifecycle
from spotwatch.imds import ImdsClient
from spotwatch.logs import get_logger
from spotwatch.monitor import MonitorBase
from spotwatch.notice import ASG_TERMINATION, Notice, notice_id

if TYPE_CHECKING:
    from spotwatch.runner import HookResult

LIFECYCLE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"
SOURCE_LIFECYCLE = "autoscaling/target-lifecycle-state"
TERMINATED = "Terminated"
KNOWN_STATES = frozenset({"InService", "Standby", "Detached", "Terminated"})
ACTION = "terminate"
LOOKUP_WAIT = 2.0  # the longest the first hook waits for the group's name
RETRY_FIRST, RETRY_MAX = 1.0, 10.0  # seconds between tries of a failing call


def parse_lifecycle_state(body: bytes) -> tuple[str | None, str]:
    """(the state, what was odd): ``Terminated`` and friends; None when unknown."""
    text = body.decode("utf-8", "replace").strip()
    if text in KNOWN_STATES or text.startswith("Warmed:"):
        return text, ""
    shown = " ".join(text.split())[:80]
    return None, f"unknown lifecycle state {shown!r}"


class AsgTerminationMonitor(MonitorBase):
    """Polls autoscaling/target-lifecycle-state; ``Terminated`` is a notice."""

    name = ASG_TERMINATION

    def __init__(
        self,
        client: ImdsClient,
        *,
        deadline_seconds: float,
        group_name: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._deadline_seconds = deadline_seconds
        self._env = (("SPOTWATCH_ASG_NAME", group_name),) if group_name else ()
        self._wall = wall_clock
        self._seen_at: float | None = None
        self._odd = ""
        self._log = get_logger(monitor=self.name)

    def check(self) -> Notice | None:
        resp = self._client.get(LIFECYCLE_PATH)
        if resp.status == 404:
            return None
        state, odd = parse_lifecycle_state(resp.body)
        if odd != self._odd:
            if odd:
                self._log.warning(
                    "asg.unparsable",
                    source=SOURCE_LIFECYCLE,
                    problem=odd,
                    note="treated as no termination; logged once until the answer changes",
                )
            self._odd = odd
        if state != TERMINATED:
            self._seen_at = None
            return None
        if self._seen_at is None:
            self._seen_at = self._wall()
        return Notice(
            kind=ASG_TERMINATION,
            action=ACTION,
            raw_time="",
            time=None,
            # Auto Scaling gives no time: the hooks get --asg-deadline from first sight.
            deadline=self._seen_at + self._deadline_seconds,
            # An instance is terminated once: one id for its Terminated state.
            id=notice_id(ASG_TERMINATION, ACTION, TERMINATED),
            source=SOURCE_LIFECYCLE,
            env=self._env,
        )


class _Action:
    """One lifecycle action being seen through: lookup, heartbeats, completion."""

    def __init__(self, notice: Notice, group: str | None) -> None:
        self.notice = notice
        self.group = group
        self.group_known = threading.Event()
        self.done = threading.Event()
        self.failed: list[str] = []
        self.thread: threading.Thread | None = None
        if group:
            self.group_known.set()


class LifecycleFollowUp:
    """The FollowUp for ``--asg-lifecycle-hook`` (see the module docstring)."""

    def __init__(
        self,
        *,
        hook: str,
        group: str | None,
        make_client: Callable[[], Any],
        instance_id: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        lookup_wait: float = LOOKUP_WAIT,
    ) -> None:
        self._hook = hook
        self._group = group
        self._make_client = make_client
        self._instance_id = instance_id
        self._clock = clock
        self._wall = wall_clock
        self._lookup_wait = lookup_wait
        self._actions: dict[str, _Action] = {}
        self._logged: set[tuple[str, str]] = set()
        self._log = get_logger(follow_up="asg-lifecycle")

    # -- FollowUp -----------------------------------------------------------------
    def applies(self, notice: Notice) -> bool:
        return notice.kind == ASG_TERMINATION

    def started(self, notice: Notice) -> None:
        if notice.id in self._actions:
            return
        action = _Action(notice, self._group)
        self._actions[notice.id] = action
        action.thread = threading.Thread(
            target=self._see_through, args=(action,), name="spotwatch-asg-lifecycle", daemon=True
        )
        action.thread.start()
        # SPOTWATCH_ASG_NAME for the hooks, if the group is found quickly.
        action.group_known.wait(self._lookup_wait)

    def tick(self, notice: Notice) -> None:
        pass  # the heartbeats keep their own time on the follow-up's thread

    def finished(self, notice: Notice, results: Sequence[HookResult]) -> None:
        action = self._actions.get(notice.id)
        if action is None:
            return
        action.failed = [r.name for r in results if not r.ok]
        action.done.set()

    def environment(self, notice: Notice) -> tuple[tuple[str, str], ...]:
        action = self._actions.get(notice.id)
        group = action.group if action is not None else self._group
        return (("SPOTWATCH_ASG_NAME", group),) if group else ()

    def wait(self, notice_id: str, timeout: float) -> bool:
        """For tests and shutdown: wait until the action is seen through."""
        action = self._actions.get(notice_id)
        if action is None or action.thread is None:
            return True
        action.thread.join(timeout)
        return not action.thread.is_alive()

    # -- the thread ---------------------------------------------------------------
    def _see_through(self, action: _Action) -> None:
        try:
            self._lifecycle(action)
        except Exception:
            # A bug here must not pass unseen, nor take the daemon with it.
            self._log.exception("asg.followup_failed", notice_id=action.notice.id)
        finally:
            action.group_known.set()

    def _lifecycle(self, action: _Action) -> None:
        deadline = action.notice.deadline
        try:
            client = self._make_client()
            instance_id = self._instance_id()
        except Exception as exc:
            self._failed_once("setup", exc)
            action.group_known.set()
            return
        if action.group is None:
            action.group = self._retry(
                "DescribeAutoScalingInstances",
                lambda: lifecycle.find_group(client, instance_id),
                deadline,
                action,
                want_value=True,
                # The first hook waits for the first answer only, never for the retries.
                after_first=action.group_known.set,
            )
            action.group_known.set()
            if action.group is None:
                return
        group = action.group
        timeout = self._attempt(
            "DescribeLifecycleHooks",
            lambda: lifecycle.heartbeat_timeout(client, group, self._hook),
        )
        beater = lifecycle.Heartbeater(
            lambda: lifecycle.record_heartbeat(
                client, group=group, hook=self._hook, instance_id=instance_id
            ),
            lifecycle.heartbeat_interval(timeout if isinstance(timeout, float) else None),
            on_error=lambda exc: self._failed_once("RecordLifecycleActionHeartbeat", exc),
            on_beat=lambda: self._log.debug("asg.heartbeat", group=group, hook=self._hook),
        ).start()
        self._log.info(
            "asg.lifecycle_watching",
            group=group,
            hook=self._hook,
            instance_id=instance_id,
            heartbeat_every=beater.interval,
        )
        action.done.wait(max(0.0, deadline - self._wall()))
        beater.stop()
        completed = self._retry(
            "CompleteLifecycleAction",
            lambda: lifecycle.complete_action(
                client, group=group, hook=self._hook, instance_id=instance_id
            ),
            deadline,
            action,
        )
        if completed is not _FAILED:
            self._log.info(
                "asg.lifecycle_completed",
                group=group,
                hook=self._hook,
                instance_id=instance_id,
                result="CONTINUE",
                hooks=("some failed: " + ", ".join(action.failed)) if action.failed else "all ok",
                timed_out=not action.done.is_set(),
                heartbeats=beater.beats,
            )

    def _attempt(self, operation: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:
            self._failed_once(operation, exc)
            return _FAILED

    def _retry(
        self,
        operation: str,
        call: Callable[[], Any],
        deadline: float,
        action: _Action,
        *,
        want_value: bool = False,
        after_first: Callable[[], None] | None = None,
    ) -> Any:
        """``call`` until it succeeds (with a value, if ``want_value``) or the deadline."""
        pause = RETRY_FIRST
        while True:
            result = self._attempt(operation, call)
            if result is not _FAILED and (result is not None or not want_value):
                return result
            if after_first is not None:
                after_first()
                after_first = None
            if result is None:
                self._once(
                    (operation, "not-found"),
                    "asg.group_unknown",
                    note="this instance is in no Auto Scaling group that can be seen; "
                    "pass --asg-name",
                )
            if self._wall() + pause >= deadline:
                return _FAILED if result is _FAILED or not want_value else None
            time.sleep(pause)
            pause = min(RETRY_MAX, pause * 2)

    def _failed_once(self, operation: str, exc: BaseException) -> None:
        permission = lifecycle.missing_permission(exc)
        code = lifecycle.error_code(exc)
        fields: dict[str, Any] = {"operation": operation, "error": f"{code}: {exc}"}
        if permission:
            fields["missing_permission"] = permission
            fields["advice"] = f"allow {permission} in the instance profile's policy"
        else:
            fields["advice"] = "retried until the deadline; the hooks are not held up"
        self._once((operation, code), "asg.api_error", **fields)

    def _once(self, key: tuple[str, str], event: str, **fields: Any) -> None:
        if key in self._logged:
            return
        self._logged.add(key)
        self._log.warning(event, note_once="logged once per operation and error", **fields)


_FAILED: Any = object()
