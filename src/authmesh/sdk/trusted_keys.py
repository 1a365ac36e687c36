"""The verifier's view of the allow list: keys indexed and decoded once per file version.

:meth:`authmesh.store.AllowListStore.snapshot` already re-reads and re-verifies the
file only when it changes and never writes from the request path (W9). On top of it
this module keeps, per snapshot, a dict from the header ``id`` string to the entry
with its public key decoded, so a request costs one ``stat`` and one dict lookup
instead of a list scan and a point decompression.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from authmesh.core.allowlist import AllowList, Device
from authmesh.core.keys import InvalidKeyError, load_public_key, public_key_from_b64
from authmesh.store import AllowListStore

__all__ = ["TrustedKey", "TrustedKeys"]


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
    """Looks up trusted keys by the exact ``publicKey`` string of an allow list."""

    def __init__(self, store: AllowListStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._indexed: tuple[AllowList, dict[str, TrustedKey]] | None = None

    def lookup(self, public_key_b64: str) -> TrustedKey | None:
        """The entry whose ``publicKey`` equals the header ``id``; raises ``StoreError``."""
        allow_list = self._store.snapshot()
        indexed = self._indexed
        if indexed is None or indexed[0] is not allow_list:
            with self._lock:
                indexed = (allow_list, _index(allow_list))
                self._indexed = indexed
        return indexed[1].get(public_key_b64)
