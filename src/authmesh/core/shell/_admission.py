"""Which shell requests an agent takes on: authenticated sessions and pending handshakes apart.

A shell request is unauthenticated until the controller's identity envelope has been verified
and found in the allow list, and anyone who knows an agent's device id and public key (neither
is secret) can make one. So pending handshakes never count against ``max_sessions``; they have
their own small budget, each may last at most ``pending_timeout``, and when the budget is full
the oldest pending handshake makes room for the new request. An honest controller answers
within a round trip, so pushing it out takes ``max_pending`` new requests in that time (a
rate the relay bounds per requester address and prefix), while requesters that never answer
hold nothing for long.

:class:`SessionSlots` is pure bookkeeping with the clock passed in; the agent cancels what it
is told to evict and ends a handshake at its :meth:`~SessionSlots.deadline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_PENDING", "DEFAULT_PENDING_TIMEOUT", "SessionSlots"]

DEFAULT_MAX_PENDING = 8
DEFAULT_PENDING_TIMEOUT = 10.0


@dataclass(slots=True)
class SessionSlots:
    """Authenticated sessions (at most ``max_sessions``) and pending handshakes."""

    max_sessions: int
    max_pending: int = DEFAULT_MAX_PENDING
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT
    _pending: dict[int, float] = field(default_factory=dict)  # key -> deadline, oldest first
    _active: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_pending < 1 or self.pending_timeout <= 0:
            raise ValueError("session limits must be positive")

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def request(self, key: int, now: float) -> int | None:
        """Take ``key`` as a pending handshake; returns the pending key it evicts, if any."""
        evicted = None
        if len(self._pending) >= self.max_pending:
            evicted = next(iter(self._pending))
            del self._pending[evicted]
        self._pending[key] = now + self.pending_timeout
        return evicted

    def deadline(self, key: int) -> float | None:
        """When the pending handshake ``key`` must be over; ``None`` if it is not pending."""
        return self._pending.get(key)

    def authenticate(self, key: int, now: float) -> bool:
        """The controller of ``key`` proved its identity: a session if one is free.

        False when ``key`` is no longer pending (evicted or expired) or every session is taken;
        either way ``key`` leaves the pending budget.
        """
        deadline = self._pending.pop(key, None)
        if deadline is None or now >= deadline or len(self._active) >= self.max_sessions:
            return False
        self._active.add(key)
        return True

    def release(self, key: int) -> None:
        """``key`` ended, in whichever state it was."""
        self._pending.pop(key, None)
        self._active.discard(key)
