"""The way back: when an end that ran the hooks turned out not to be one.

The hooks in ``hooks.d`` may take the instance out of service (deregister it,
cordon a node); the resume hooks (``/etc/spotwatch/resume.d``) put it back.
They run once per end that ran hooks, when spotwatch sees it is still here:

- on a new boot of the same instance after an end it handled (a stop,
  hibernate, reboot, or a ``shutdown`` run followed by a plain reboot); the
  watcher asks ``boot.BootRecord`` for that end;
- while running, when a notice that can be withdrawn leaves its source after
  its hooks ran and no end of the instance followed (``Withdrawals``): a
  rebalance recommendation withdrawn, a scheduled maintenance canceled or
  completed, a Google ``MIGRATE`` completed, an Azure event gone from the
  document with the VM still running.

A resume run is journaled like a notice, under ``resume-<notice id>``, so it
runs once even across restarts. Pure decisions here; the watcher runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from spotwatch.notice import Notice

PHASE_VARIABLE = "SPOTWATCH_PHASE"
END = "end"
RESUME = "resume"
RESUME_PREFIX = "resume-"
# A resume run has no platform deadline: each hook still has --hook-timeout.
RESUME_WINDOW = 3600.0
# A notice must be absent from this many polls in a row before it counts as
# withdrawn: one empty answer from a server mid-maintenance is not a withdrawal.
ABSENT_POLLS = 2

# Sources whose notice can be withdrawn with the instance still running (the
# monitors' `source` values; tests check they match). A spot notice, a Google
# preemption and an Auto Scaling termination are never withdrawn.
WITHDRAWABLE_SOURCES = frozenset(
    {
        "events/recommendations/rebalance",  # monitors.SOURCE_REBALANCE
        "events/maintenance/scheduled",  # maintenance.SOURCE_SCHEDULED
        "gce:instance/maintenance-event",  # gcp.SOURCE_MAINTENANCE
        "gce:instance/upcoming-maintenance",  # gce_upcoming.SOURCE_UPCOMING
        "azure:scheduledevents",  # azure.SOURCE
    }
)


def is_resume(notice: Notice) -> bool:
    return notice.id.startswith(RESUME_PREFIX)


def resume_notice(original: Notice, now: float) -> Notice:
    """The resume run of ``original``: its event's variables, SPOTWATCH_PHASE=resume."""
    own = (PHASE_VARIABLE, "SPOTWATCH_NOTICE_ID")
    env = tuple(pair for pair in original.env if pair[0] not in own)
    return replace(
        original,
        id=RESUME_PREFIX + original.id,
        deadline=now + RESUME_WINDOW,
        ends_instance=False,
        # The original's id for the hooks (the journal keys this run on its own id).
        env=(*env, (PHASE_VARIABLE, RESUME), ("SPOTWATCH_NOTICE_ID", original.id)),
    )


def original_id(notice: Notice) -> str:
    return notice.id[len(RESUME_PREFIX) :] if is_resume(notice) else notice.id


@dataclass
class Withdrawals:
    """Handled notices that may yet be withdrawn, per monitor, and how long each has been
    gone. Pure bookkeeping: ``observe`` says which one to come back from."""

    awaiting: dict[str, Notice] = field(default_factory=dict)
    absent: dict[str, int] = field(default_factory=dict)

    def handled(self, monitor: str, notice: Notice) -> None:
        """``notice`` (from ``monitor``) ran its hooks to the end."""
        if notice.source in WITHDRAWABLE_SOURCES:
            self.awaiting[monitor] = notice
            self.absent[monitor] = 0
        elif notice.ends_instance:
            # An interruption followed: nothing earlier turned out a false alarm.
            self.awaiting.clear()
            self.absent.clear()

    def observe(self, monitor: str, seen: Notice | None) -> Notice | None:
        """What ``monitor`` answered this poll; the awaited notice once it is gone."""
        waiting = self.awaiting.get(monitor)
        if waiting is None:
            return None
        if seen is not None and seen.id == waiting.id:
            self.absent[monitor] = 0
            return None
        self.absent[monitor] = self.absent.get(monitor, 0) + 1
        if self.absent[monitor] < ABSENT_POLLS:
            return None
        del self.awaiting[monitor]
        del self.absent[monitor]
        return waiting
