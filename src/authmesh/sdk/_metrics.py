"""Verification outcomes, counted for Prometheus and logged as structured events.

A :class:`~authmesh.sdk.Verifier` built with ``observer=...`` reports every
request it decides on: the :class:`Outcome` and the time the verifier
spent on it (header checks plus signature and nonce, without waiting for the
body). Adapters need no code for this: any adapter that calls the verifier is
observed, so the counts are the same whichever framework serves the request.

:class:`VerificationMetrics` is the observer this package ships: a counter
``authmesh_verifications_total{outcome}``, a histogram
``authmesh_verification_seconds{outcome}`` and one log record per refusal on the
``authmesh.sdk.events`` logger (accepted requests at DEBUG). Records carry the
outcome, status, signature version and duration only: never a device id, key,
nonce, signature, path or query. Refusals are logged at most ``log_per_second``
times per second per outcome, so a flood of bad requests cannot fill the disk;
the next record says how many were left out.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

__all__ = ["Outcome", "VerificationMetrics", "VerificationObserver"]


class Outcome(enum.StrEnum):
    """Why a request was accepted or refused (the ``outcome`` label)."""

    ACCEPTED = "accepted"
    MALFORMED = "malformed"
    """400: no or malformed header, unsupported version, bad target or length."""
    UNKNOWN_DEVICE = "unknown_device"
    ROLE_REFUSED = "role_refused"
    """The key is in the allow list, but not as a controller."""
    KEY_EXPIRED = "key_expired"
    """The entry's key is older than its ``maxKeyAge`` (key rotation)."""
    SKEW = "skew"
    DOWNGRADE = "downgrade"
    """A peer paired with protocol 2 signed with version 1."""
    WRONG_AUTHORITY = "wrong_authority"
    BAD_SIGNATURE = "bad_signature"
    REPLAY = "replay"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    """The body did not arrive in time (408)."""
    STORE_FAILURE = "store_failure"
    """The allow list or the nonce store failed; refused with 500 (fail closed)."""


class VerificationObserver(Protocol):
    """Told about every decision; must not raise and should return quickly."""

    def observe(
        self, outcome: Outcome, status: int, seconds: float | None, version: str | None
    ) -> None:
        """``status`` as answered (200 when accepted), ``version`` when the header had one.

        ``seconds`` is None for refusals made outside the verifier's own checks
        (body too large, body timeout, bad ``Content-Length``).
        """


# Verification takes 50-500 µs; buckets resolve that range and the slow tail.
_BUCKETS = (25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 0.1)


class _LogBudget:
    """At most ``per_second`` records per key and second; counts what it drops."""

    def __init__(self, per_second: int, monotonic: Callable[[], float]) -> None:
        self._per_second = per_second
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int, int]] = {}  # key -> (second, sent, dropped)

    def admit(self, key: str) -> int | None:
        """None when this record must be dropped, else how many were dropped before it."""
        second = int(self._monotonic())
        with self._lock:
            window, sent, dropped = self._windows.get(key, (second, 0, 0))
            if window != second:
                window, sent = second, 0
            if sent >= self._per_second:
                self._windows[key] = (window, sent, dropped + 1)
                return None
            self._windows[key] = (window, sent + 1, 0)
            return dropped


class VerificationMetrics:
    """Prometheus counters and histogram plus structured log events.

    ``registry``: where the metrics are registered (default: the process-wide
    ``prometheus_client.REGISTRY``; create one :class:`VerificationMetrics` per
    registry). ``log_per_second``: refusal records per outcome and second.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        logger: logging.Logger | None = None,
        log_per_second: int = 10,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = Counter(
            "authmesh_verifications",
            "AuthMesh request verifications by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "authmesh_verification_seconds",
            "Time the verifier spent per request (headers, signature, nonce), by outcome.",
            ["outcome"],
            buckets=_BUCKETS,
            registry=registry,
        )
        # Label children resolved once: a labelled lookup per request costs more than the count.
        self._counters = {outcome: self.total.labels(outcome.value) for outcome in Outcome}
        self._histograms = {outcome: self.seconds.labels(outcome.value) for outcome in Outcome}
        self._log = logger or logging.getLogger("authmesh.sdk.events")
        self._budget = _LogBudget(log_per_second, monotonic)

    def observe(
        self, outcome: Outcome, status: int, seconds: float | None, version: str | None
    ) -> None:
        self._counters[outcome].inc()
        if seconds is not None:
            self._histograms[outcome].observe(seconds)
        level = logging.DEBUG if outcome is Outcome.ACCEPTED else logging.INFO
        if not self._log.isEnabledFor(level):
            return
        dropped = 0 if outcome is Outcome.ACCEPTED else self._budget.admit(outcome.value)
        if dropped is None:
            return
        self._log.log(
            level,
            "authmesh verification %s (%d)",
            outcome.value,
            status,
            extra={
                "event": "authmesh_verification",
                "outcome": outcome.value,
                "status": status,
                "version": version,
                "duration_us": None if seconds is None else round(seconds * 1e6),
                "suppressed": dropped,
            },
        )
