"""The base of every cloud adapter, and what an adapter builds.

An adapter (one module per cloud in this package, listed in ``registry``) says
which sources its cloud has and how the cloud is recognised; it builds the
monitors, the identity reader, the follow-ups and the feeds of ``spotwatch
run``; it names its simulator for ``spotwatch sim`` and schedules what ``spotwatch
drill`` rehearses there. The rest of spotwatch asks the registry for the
adapter and never branches on a cloud's name. Imports nothing of boto3.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar, Protocol

from spotwatch.notice import Identity

if TYPE_CHECKING:
    from spotwatch.config import RunConfig
    from spotwatch.followup import FollowUp
    from spotwatch.monitor import Monitor
    from spotwatch.stopper import Stopper


class Closable(Protocol):
    def close(self) -> None: ...


class Simulator(Protocol):
    """A metadata simulator on 127.0.0.1 (``spotwatch sim``, the drill, the tests)."""

    @property
    def url(self) -> str: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class SimRequest:
    """What ``spotwatch sim`` was asked to serve; a cloud uses what it has."""

    host: str = "127.0.0.1"
    port: int = 0
    notice_in: float | None = None
    action: str = "terminate"
    lead: float = 120.0
    rebalance_in: float | None = None
    require_token: bool = False
    asg_terminated_in: float | None = None
    maintenance_in: float | None = None
    maintenance_code: str = "system-reboot"


@dataclass(frozen=True)
class Rehearsal:
    """What ``spotwatch drill`` rehearses: ``event`` (one of the cloud's drill_events but
    shutdown, which needs no simulator) appearing ``notice_in`` s in."""

    event: str
    action: str
    lead: float
    notice_in: float


@dataclass(frozen=True)
class DrillSim:
    """A simulator for a drill (not started), and how to put its event on it:
    ``schedule(appear_at)`` returns the deadline (epoch) and the notice time as shown."""

    simulator: Simulator
    schedule: Callable[[float], tuple[float, str]]


@dataclass
class CloudSources:
    monitors: list[Monitor]
    read_identity: Callable[[], Identity]
    followups: list[FollowUp] = field(default_factory=list)
    feeds: list[Closable] = field(default_factory=list)  # to close when done (tests, the drill)
    # Entered around each poll: on AWS, one poll's GETs share one time budget.
    poll_scope: Callable[[], AbstractContextManager[object]] = nullcontext

    def close(self) -> None:
        for feed in self.feeds:
            feed.close()


class Cloud:
    """One cloud. Subclasses set the class attributes and implement ``build``,
    ``serve`` and ``drill``; the other methods have defaults that say "nothing"."""

    name: ClassVar[str]  # the --cloud value, and SPOTWATCH_CLOUD for the hooks
    title: ClassVar[str]  # in messages: "AWS", "Google"
    sources: ClassVar[Sequence[str]]  # the --watch sources this cloud has
    # The --event values the drill rehearses here (shutdown: on every cloud).
    drill_events: ClassVar[Sequence[str]] = ("spot", "maintenance", "shutdown")
    # The poll interval when --interval is not given; None: the common default.
    default_interval: ClassVar[float | None] = None
    # The most a run of the hooks at a system shutdown may take here; None: no cap.
    shutdown_seconds: ClassVar[float | None] = None
    # Detection asks the metadata services in this order (lowest first): the
    # clouds whose answers are unmistakable before those that are not.
    probe_rank: ClassVar[int] = 0

    def from_dmi(self, read: Callable[[str], str]) -> str | None:
        """Why the DMI strings (``read("sys_vendor")``, ...) say this cloud, or None."""
        return None

    def probe(self, base_url: str) -> str | None:
        """Why the metadata service at ``base_url`` is this cloud's, or None (one short ask)."""
        return None

    def leads(self, config: RunConfig) -> list[tuple[float, str]]:
        """The fixed leads of the watched sources: (seconds ahead, which source)."""
        return []

    def interval(self, interval: float, given: bool) -> float:
        """The poll interval: ``--interval`` when given, else this cloud's default."""
        if given or self.default_interval is None:
            return interval
        return self.default_interval

    def build(self, config: RunConfig, *, interval: float, stop: Stopper) -> CloudSources:
        """The monitors (feeds started), identity reader and follow-ups for ``config``."""
        raise NotImplementedError

    def serve(self, request: SimRequest) -> Simulator:
        """This cloud's simulator, started, with what ``request`` schedules."""
        raise NotImplementedError

    def drill(self, rehearsal: Rehearsal) -> DrillSim:
        """The simulator for ``rehearsal`` and how to schedule its event."""
        raise NotImplementedError

    def drill_source(self, event: str) -> str:
        """The --watch source that sees the drill's ``event`` (most are named alike)."""
        return event

    def describe_drill(self, rehearsal: Rehearsal, notice_time: str) -> tuple[str, str]:
        """(what is rehearsed, what the "notice out" line of the drill's report says)."""
        return f"{self.title} {rehearsal.event}", f"notice at {notice_time}"
