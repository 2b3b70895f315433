"""Work some sources need around the hooks of a notice (the FollowUp protocol).

An Auto Scaling termination with a lifecycle hook wants heartbeats while the
hooks run and ``CompleteLifecycleAction`` after them; Azure wants its event
approved. The watcher calls every follow-up whose ``applies`` is true:

- ``started`` just before the first hook (it must not hold it up more than ~2 s),
- ``tick`` often while hooks run (cheap, never blocking),
- ``finished`` after the last hook, whether the hooks failed or not;
- ``environment`` (when it starts) what it learnt for the hooks, e.g.
  ``SPOTWATCH_ASG_NAME``; nothing by default (``FollowUpBase``).

Slow network work belongs on a thread the follow-up owns: the hooks never wait on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from spotwatch.notice import Notice

if TYPE_CHECKING:
    from spotwatch.runner import HookResult


class FollowUp(Protocol):
    def applies(self, notice: Notice) -> bool: ...

    def started(self, notice: Notice) -> None: ...

    def tick(self, notice: Notice) -> None: ...

    def finished(self, notice: Notice, results: Sequence[HookResult]) -> None: ...

    def environment(self, notice: Notice) -> Sequence[tuple[str, str]]: ...


class FollowUpBase:
    """The no-op default of ``FollowUp``: nothing to add to the hooks' environment."""

    def environment(self, notice: Notice) -> Sequence[tuple[str, str]]:
        return ()
