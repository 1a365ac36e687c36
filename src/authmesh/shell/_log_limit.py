"""Log lines that unauthenticated requests can trigger, limited per kind of line.

Anyone can make an agent refuse or time out a handshake, as often as the relay lets them, so
each such line is written at most ``burst`` times per ``window`` seconds; the rest are counted
and reported in one line when the next window opens. The kind of a line is its format string,
which comes from our code, so the table stays as small as the number of such lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LimitedLog"]


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0


class LimitedLog:
    """Writes to ``log`` with at most ``burst`` lines of one kind per ``window`` seconds."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        burst: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._burst = burst
        self._window = window
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def warning(self, message: str, *args: object) -> None:
        self.write(logging.WARNING, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.write(logging.INFO, message, *args)

    def write(self, level: int, message: str, *args: object) -> None:
        now = self._clock()
        window = self._windows.get(message)
        if window is None or now - window.start >= self._window:
            if window is not None and window.suppressed:
                self._log.log(
                    level,
                    "%d more like the next line in the last %.0f s were not logged.",
                    window.suppressed,
                    now - window.start,
                )
            window = self._windows[message] = _Window(now)
        if window.written < self._burst:
            window.written += 1
            self._log.log(level, message, *args)
        else:
            window.suppressed += 1
