"""The fleet side of Auto Scaling termination lifecycle actions.

An ``asg-termination`` event (``EC2 Instance-terminate Lifecycle Action``) holds
its instance in ``Terminating:Wait``. While the event's hooks run, heartbeats
(``RecordLifecycleActionHeartbeat``) keep the hook's timeout from running out;
once they all succeeded, ``CompleteLifecycleAction`` with ``CONTINUE`` (by
token) lets the group go on. After a failure nothing is completed: the message
comes back and the hooks run again.

The calls themselves are ``spotwatch.lifecycle``'s, shared with the instance
side. This module only decides when, and what a failure means for the message.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from spotwatch import lifecycle
from spotwatch.errors import aws_error_text
from spotwatch.fleet_events import LifecycleAction

# Errors after which completing again cannot help: the action is already
# completed, abandoned or timed out, or the hook is gone.
_FINAL_CODES = frozenset({"ValidationError"})


class LifecycleActions:
    """Heartbeats and completion for the fleet watcher's workers (thread-safe).

    ``client_for_region`` makes an ``autoscaling`` client (cached here, one per
    region). ``heartbeat`` fixes the seconds between heartbeats; None: half the
    hook's ``HeartbeatTimeout``, looked up once per group and hook on a thread of
    its own (15 s until it is known, which is within the shortest timeout AWS
    allows), so no hook waits for the lookup.
    """

    def __init__(
        self,
        client_for_region: Callable[[str], Any],
        *,
        heartbeat: float | None = None,
        log: Any,
    ) -> None:
        self._client_for_region = client_for_region
        self._heartbeat = heartbeat
        self._log = log
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._intervals: dict[tuple[str, str, str], float] = {}
        self._looking: set[tuple[str, str, str]] = set()
        self._denied: set[str] = set()

    def client(self, region: str) -> Any:
        with self._lock:
            if region not in self._clients:
                self._clients[region] = self._client_for_region(region)
            return self._clients[region]

    def heartbeats(self, region: str, action: LifecycleAction, log: Any) -> lifecycle.Heartbeater:
        """A started Heartbeater for ``action``; the caller stops it when the hooks end."""
        key = (region, action.group, action.hook)
        with self._lock:
            interval = self._heartbeat or self._intervals.get(key)
            look_up = interval is None and key not in self._looking
            if look_up:
                self._looking.add(key)
        beater = lifecycle.Heartbeater(
            lambda: lifecycle.record_heartbeat(self.client(region), group=action.group,
                                               hook=action.hook, token=action.token),
            interval or lifecycle.FALLBACK_HEARTBEAT_SECONDS,
            on_error=lambda exc: self._beat_failed(exc, action, log),
            on_beat=lambda: log.info("fleet.lifecycle_heartbeat", asg_name=action.group,
                                     lifecycle_hook=action.hook),
            name="fleet-heartbeat",
        )
        if look_up:
            threading.Thread(target=self._look_up, args=(key, beater), daemon=True,
                             name="fleet-heartbeat-timeout").start()
        return beater.start()

    def _look_up(self, key: tuple[str, str, str], beater: lifecycle.Heartbeater) -> None:
        region, group, hook = key
        try:
            timeout = lifecycle.heartbeat_timeout(self.client(region), group, hook)
        except Exception as exc:  # the fallback interval is safe; say why once
            self._log.warning("fleet.lifecycle_hook_unknown", asg_name=group, lifecycle_hook=hook,
                              error=aws_error_text(exc), heartbeat=beater.interval,
                              permission=lifecycle.missing_permission(exc))
            timeout = None
        interval = lifecycle.heartbeat_interval(timeout)
        with self._lock:
            self._intervals[key] = interval
            self._looking.discard(key)
        beater.interval = interval

    def _beat_failed(self, exc: BaseException, action: LifecycleAction, log: Any) -> None:
        permission = lifecycle.missing_permission(exc)
        if permission is not None:
            self._denied_once(permission, log)
            return
        log.warning("fleet.lifecycle_heartbeat_failed", asg_name=action.group,
                    lifecycle_hook=action.hook, error=aws_error_text(exc),
                    note="retried at the next beat")

    def complete(self, region: str, action: LifecycleAction, log: Any) -> bool:
        """CompleteLifecycleAction CONTINUE by token. True when the message is done with
        (completed, or the action is no longer there to complete); False to leave it
        in the queue, so the hooks and the completion are tried again."""
        try:
            lifecycle.complete_action(self.client(region), group=action.group, hook=action.hook,
                                      result="CONTINUE", token=action.token)
        except Exception as exc:
            code = lifecycle.error_code(exc)
            permission = lifecycle.missing_permission(exc)
            if permission is not None:
                self._denied_once(permission, log)
            elif code in _FINAL_CODES:
                log.warning("fleet.lifecycle_gone", asg_name=action.group,
                            lifecycle_hook=action.hook, error=aws_error_text(exc),
                            note="already completed, abandoned or timed out; nothing to do")
                return True
            log.error("fleet.lifecycle_complete_failed", asg_name=action.group,
                      lifecycle_hook=action.hook, error=aws_error_text(exc),
                      note="left in the queue: its hooks run again, then the completion")
            return False
        log.info("fleet.lifecycle_completed", asg_name=action.group,
                 lifecycle_hook=action.hook, result="CONTINUE")
        return True

    def _denied_once(self, permission: str, log: Any) -> None:
        with self._lock:
            if permission in self._denied:
                return
            self._denied.add(permission)
        log.error("fleet.lifecycle_denied", permission=permission,
                  advice=f"grant {permission} to the role 'fleet watch' runs as")
