"""What the watcher asks of every source of notices: the Monitor protocol.

``check`` is one poll: a notice, None, or a fault (the watcher's ``fault_types``).
The rest have honest no-op defaults in ``MonitorBase``, which every monitor
names as its base: a polled monitor has no news between polls, most add nothing
to the idle status line, and one without a thread or connection of its own has
nothing to close. The cloud monitors live with their clouds (``spotwatch.clouds``).
"""

from __future__ import annotations

from typing import Protocol

from spotwatch.notice import Notice


class Monitor(Protocol):
    name: str

    def check(self) -> Notice | None: ...

    def has_news(self) -> bool:
        """True when an answer the loop has not polled yet is in (it then wakes early)."""
        ...

    def status_note(self) -> str | None:
        """What this monitor adds to the idle STATUS line, or None."""
        ...

    def close(self) -> None:
        """Release what the monitor holds (a feed's thread and connection)."""
        ...


class MonitorBase:
    """The no-op defaults of ``Monitor``; subclasses set ``name`` and define ``check``."""

    name: str

    def has_news(self) -> bool:
        return False

    def status_note(self) -> str | None:
        return None

    def close(self) -> None:
        pass
