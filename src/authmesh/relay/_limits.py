"""Fixed-window failure counters keyed by client (or anything else).

Most limiters record only failures, so successful users are never throttled (relay spec W6:
the reference counted every attempt); the few that bound an unauthenticated action itself
(opening a code, asking an agent for a shell) count every attempt. The map is bounded: when
it is full, expired entries are dropped first and then the oldest entry, so a flood of fresh
keys cannot grow memory.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FailureLimiter"]


@dataclass
class _Window:
    count: int
    resets_at: float


class FailureLimiter:
    """At most ``limit`` failures per key per ``window`` seconds."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: dict[str, _Window] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def failures(self, key: str, now: float) -> int:
        """Failures of ``key`` in its current window."""
        entry = self._windows.get(key)
        return entry.count if entry is not None and now < entry.resets_at else 0

    def blocked(self, key: str, now: float) -> bool:
        """True while ``key`` has used up its failures in the current window."""
        return self.failures(key, now) >= self.limit

    def fail(self, key: str, now: float) -> None:
        """Record one failure for ``key``."""
        entry = self._windows.get(key)
        if entry is None or now >= entry.resets_at:
            if entry is None and len(self._windows) >= self.max_keys:
                self.purge(now)
                if len(self._windows) >= self.max_keys:
                    del self._windows[next(iter(self._windows))]
            self._windows.pop(key, None)
            self._windows[key] = _Window(1, now + self.window)
        else:
            entry.count += 1

    def adopt(self, key: str, count: int, resets_at: float) -> None:
        """Take the shared count for ``key`` (other relay instances count failures too)."""
        if count <= 0:
            self._windows.pop(key, None)
            return
        entry = self._windows.get(key)
        if entry is None:
            if len(self._windows) >= self.max_keys:
                del self._windows[next(iter(self._windows))]
            self._windows[key] = _Window(count, resets_at)
        else:
            entry.count, entry.resets_at = count, resets_at

    def purge(self, now: float) -> None:
        """Forget windows that have ended, oldest first, stopping at the first live one: the
        map is in the order windows opened, so a flood of fresh keys never pays for a scan
        of the whole map. (A count adopted from another instance may end out of order; it
        is forgotten when its turn comes, and counts nothing meanwhile.)"""
        windows = self._windows
        while windows:
            oldest = next(iter(windows))
            if now < windows[oldest].resets_at:
                return
            del windows[oldest]
