"""Replay protection: the nonce-store interface and a bounded in-memory store.

Semantics follow the reference ``InMemoryNonceStore`` (spec sdk-keystore.md §6.6) in
whole seconds: a key recorded at second ``t`` with TTL ``ttl`` is refused through
second ``t + ttl`` and accepted again from ``t + ttl + 1``. Unlike the reference
(W10), every call is O(1) amortised — expired entries are swept a few at a time from
the front of an insertion-ordered queue, never by scanning the whole map — and a
store full of live entries refuses new ones (fail closed) instead of growing.

Keys are opaque to the store; callers scope them (e.g. device id plus nonce).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_CAPACITY",
    "AsyncNonceStore",
    "InMemoryNonceStore",
    "NonceStore",
    "as_async",
]

DEFAULT_CAPACITY = 1_000_000
# Expired queue heads removed per call: more than one, so sweeping outpaces inserts.
_SWEEP_PER_CALL = 8


@runtime_checkable
class NonceStore(Protocol):
    """Synchronous store: record ``key`` for ``ttl_seconds`` unless it is already live."""

    def check_and_store(self, key: str, ttl_seconds: int) -> bool:
        """True if ``key`` was fresh and is now recorded; False to reject the request."""
        ...


@runtime_checkable
class AsyncNonceStore(Protocol):
    """Asynchronous variant of :class:`NonceStore` (e.g. a Redis client)."""

    async def check_and_store(self, key: str, ttl_seconds: int) -> bool:
        """True if ``key`` was fresh and is now recorded; False to reject the request."""
        ...


class InMemoryNonceStore:
    """Bounded, thread-safe, per-process nonce store.

    ``capacity`` bounds the entries held (live or not yet swept). With mixed TTLs a
    long-lived entry at the queue head can delay reclaiming shorter ones behind it;
    the store then refuses rather than grows, which errs on the safe side.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._clock = clock
        self._expiry: dict[str, int] = {}
        # Expiries and keys in insertion order, as two queues of ints and strings rather
        # than one of (expiry, key) tuples: a tuple is a garbage-collector-tracked object,
        # so one per request would make a busy server's collector run (and promote
        # everything in flight) ever more often. An item whose expiry no longer matches
        # self._expiry[key] is stale and only dropped.
        self._queue_expiries: deque[int] = deque()
        self._queue_keys: deque[str] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Entries currently held (including expired ones not yet swept)."""
        return len(self._expiry)

    def check_and_store(self, key: str, ttl_seconds: int) -> bool:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        now = math.floor(self._clock())
        with self._lock:
            self._sweep(now)
            expiry = self._expiry.get(key)
            if expiry is not None and expiry >= now:
                return False
            if len(self._queue_keys) >= self._capacity:
                return False
            self._expiry[key] = now + ttl_seconds
            self._queue_expiries.append(now + ttl_seconds)
            self._queue_keys.append(key)
            return True

    def _sweep(self, now: int) -> None:
        expiries, keys = self._queue_expiries, self._queue_keys
        for _ in range(_SWEEP_PER_CALL):
            if not expiries or expiries[0] >= now:
                return
            expiry, key = expiries.popleft(), keys.popleft()
            if self._expiry.get(key) == expiry:
                del self._expiry[key]

    def clear(self) -> None:
        """Forget every recorded key."""
        with self._lock:
            self._expiry.clear()
            self._queue_expiries.clear()
            self._queue_keys.clear()


class _AsyncAdapter:
    def __init__(self, store: NonceStore) -> None:
        self._store = store

    async def check_and_store(self, key: str, ttl_seconds: int) -> bool:
        # In-memory checks take microseconds: call straight through on the loop.
        return self._store.check_and_store(key, ttl_seconds)


def as_async(store: NonceStore) -> AsyncNonceStore:
    """Wrap a fast synchronous store (like :class:`InMemoryNonceStore`) for async callers."""
    return _AsyncAdapter(store)
