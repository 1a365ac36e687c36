"""The verifier's view of the allow list: keys indexed and decoded once per file version.

:meth:`authmesh.store.AllowListStore.snapshot` already re-reads and re-verifies the
file only when it changes and never writes from the request path (W9). On top of it
this module keeps, per snapshot, a dict from the header ``id`` string to the entry
with its public key decoded, so a request costs one dict lookup instead of a list
scan and a point decompression.

It also asks the store for its snapshot (a ``stat`` of the file and a lock, 5-15 us
here) at most once per ``recheck_seconds`` of monotonic time, not on every
request. A revocation, a new pairing or a tampered file therefore takes effect at
most ``recheck_seconds`` after the file changes (default
:data:`DEFAULT_RECHECK_SECONDS`, 0.5 s; 0 checks on every request). Between checks
the last verified list is used — never anything unverified: when the check fails
(tampering, unreadable file) every lookup raises until a later check succeeds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from authmesh.core import AllowList, Device, InvalidKeyError, public_key_from_b64
from authmesh.core._keys import load_public_key
from authmesh.store import AllowListStore

__all__ = ["DEFAULT_RECHECK_SECONDS", "TrustedKey", "TrustedKeys"]

DEFAULT_RECHECK_SECONDS = 0.5
"""Longest time a changed allow list goes unnoticed by a running verifier."""


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """An allow-list entry with its public key decoded."""

    device: Device
    public_key: ec.EllipticCurvePublicKey | None
    """None when the stored key is not a valid compressed point (never verifies)."""


def _index(allow_list: AllowList) -> dict[str, TrustedKey]:
    index: dict[str, TrustedKey] = {}
    for device in allow_list.devices:
        if device.public_key in index:
            continue  # the reference's findByPublicKey returns the first match
        try:
            key: ec.EllipticCurvePublicKey | None = load_public_key(
                public_key_from_b64(device.public_key)
            )
        except InvalidKeyError:
            key = None
        index[device.public_key] = TrustedKey(device, key)
    return index


class TrustedKeys:
    """Looks up trusted keys by the exact ``publicKey`` string of an allow list.

    ``monotonic`` is the clock of the recheck interval (injectable for tests).
    """

    def __init__(
        self,
        store: AllowListStore,
        recheck_seconds: float = DEFAULT_RECHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if recheck_seconds < 0:
            raise ValueError("the allow-list recheck interval must not be negative")
        self._store = store
        self._recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._indexed: tuple[AllowList, dict[str, TrustedKey]] | None = None
        # Monotonic time until which ``_indexed`` is used without asking the store;
        # -inf forces a check (first lookup, or after a failed one).
        self._fresh_until = -math.inf

    def lookup(self, public_key_b64: str) -> TrustedKey | None:
        """The entry whose ``publicKey`` equals the header ``id``; raises ``StoreError``."""
        indexed = self._indexed
        if indexed is None or self._monotonic() >= self._fresh_until:
            indexed = self._refresh()
        return indexed[1].get(public_key_b64)

    def invalidate(self) -> None:
        """Re-check the file on the next lookup (this process just changed it)."""
        self._fresh_until = -math.inf

    def _refresh(self) -> tuple[AllowList, dict[str, TrustedKey]]:
        checked_at = self._monotonic()
        with self._lock:
            self._fresh_until = -math.inf  # a failing check below keeps failing every lookup
            allow_list = self._store.snapshot()
            indexed = self._indexed
            if indexed is None or indexed[0] is not allow_list:
                indexed = (allow_list, _index(allow_list))
                self._indexed = indexed
            self._fresh_until = checked_at + self._recheck_seconds
        return indexed
