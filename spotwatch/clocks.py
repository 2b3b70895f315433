"""The clocks and the logger, passed as one object.

Every part that waits, measures or logs takes a :class:`Clocks`; tests pass
fake clocks and a capturing logger in one argument instead of three.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from spotwatch.logs import get_logger


@dataclass(frozen=True)
class Clocks:
    """``monotonic`` measures intervals and deadlines, ``wall`` gives epoch seconds
    for what is logged and handed to hooks, ``sleep`` waits; ``log`` None:
    spotwatch's logger."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    log: Any = None
    sleep: Callable[[float], None] = time.sleep

    def logger(self) -> Any:
        return self.log if self.log is not None else get_logger()


SYSTEM = Clocks()
