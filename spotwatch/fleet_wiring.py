"""What a FleetWatcher is built from, beside its settings, clocks and stop flag:
the AWS clients, the hook machinery and where its reports go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

if TYPE_CHECKING:
    from spotwatch.fleet_lifecycle import LifecycleActions
    from spotwatch.fleet_tags import Tags
    from spotwatch.hooks import HookPlan
    from spotwatch.metrics import FleetMetrics
    from spotwatch.runner import HookResult

STATUS_INTERVAL = 5.0


@dataclass(frozen=True)
class FleetClients:
    """The queue's SQS client, the instances' tags and, for Auto Scaling
    terminations, the lifecycle actions (None: not completed)."""

    sqs: Any
    tags: Tags
    lifecycle: LifecycleActions | None = None


@dataclass(frozen=True)
class FleetHooks:
    """How an event's hooks are planned and run; ``workdir`` holds each event's
    JSON file, ``environ`` (None: the process's) the hooks' base environment."""

    plan: Callable[[Path], HookPlan]
    runner: Callable[..., list[HookResult]]
    workdir: Path
    environ: Mapping[str, str] | None = None


@dataclass(frozen=True)
class FleetReporting:
    """Where events and the status line go (None: stdout), every how many
    seconds the status line is written, and the metrics kept (None: counts only)."""

    out: TextIO | None = None
    metrics: FleetMetrics | None = None
    status_interval: float = STATUS_INTERVAL


STDOUT_REPORTING = FleetReporting()
