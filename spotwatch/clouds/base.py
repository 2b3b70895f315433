"""The base of every cloud adapter, and what an adapter builds for ``spotwatch run``.

An adapter (one module per cloud in this package, listed in ``registry``) says
which sources its cloud has and builds the monitors, the identity reader, the
follow-ups and the feeds that watch them. The rest of spotwatch asks the
registry for the adapter and never branches on a cloud's name. Imports nothing
of boto3.
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
    """One cloud. Subclasses set the class attributes and implement ``build``."""

    name: ClassVar[str]  # the --cloud value, and SPOTWATCH_CLOUD for the hooks
    sources: ClassVar[Sequence[str]]  # the --watch sources this cloud has
    # The poll interval when --interval is not given; None: the common default.
    default_interval: ClassVar[float | None] = None

    def interval(self, interval: float, given: bool) -> float:
        """The poll interval: ``--interval`` when given, else this cloud's default."""
        if given or self.default_interval is None:
            return interval
        return self.default_interval

    def build(self, config: RunConfig, *, interval: float, stop: Stopper) -> CloudSources:
        """The monitors (feeds started), identity reader and follow-ups for ``config``."""
        raise NotImplementedError
