"""In-band key rotation: the verifier's hook and the client's announcer.

**Server** (:class:`InBandRotation`, called from :class:`~authmesh.sdk.Verifier`):
a request whose key is not trusted but which carries ``X-AuthMesh-Rotation`` (a chain of
statements, :mod:`authmesh.core._rotation`) ending at that key is verified against the
entry the chain continues. Only after the request's own signature and nonce pass is the
entry replaced, under the allow-list lock and re-checked against the file as it is
then, so two racing requests, or a request racing ``amesh revoke``, cannot lose an
update or revive a revoked key. A refused chain is just an unknown key (401). Every
verified request that carried the header is answered with ``X-AuthMesh-Rotation-Ack:
<keySeq>``.

**Client** (:class:`RotationAnnouncer`, used by
:class:`~authmesh.sdk.AuthMeshAuth` built with ``from_home``): follows the home's
identity when ``amesh rotate`` switches it (checked at most every
``recheck_seconds``), and adds the chain to requests for each server until that server
acknowledges the current ``keySeq``. Acknowledgements are unauthenticated hints: a 401
to a request sent without the chain makes the client forget the hint and retry once
with it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from authmesh.core import AllowList, RotationError, RotationStatement, public_key_from_b64
from authmesh.core._keys import load_public_key
from authmesh.core._rotation import MAX_CHAIN, apply_chain, decode_chain, encode_chain, key_seq
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._trusted_keys import TrustedKey
from authmesh.store import AllowListStore, AmeshHome, Context, StoreError, load_context
from authmesh.store._rotation import load_state

__all__ = [
    "ACK_HEADER",
    "MAX_HEADER_CHARS",
    "ROTATION_HEADER",
    "ROTATION_HEADER_ASGI",
    "InBandRotation",
    "PendingRotation",
    "RotationAnnouncer",
]

ROTATION_HEADER = "X-AuthMesh-Rotation"
ROTATION_HEADER_ASGI = ROTATION_HEADER.lower().encode("latin-1")
"""The header's name as ASGI servers give it (lowercase bytes)."""
ACK_HEADER = "X-AuthMesh-Rotation-Ack"
MAX_HEADER_CHARS = 8192
_MAX_ACKED_SERVERS = 4096

_log = logging.getLogger("authmesh.sdk")


@dataclass(frozen=True, slots=True)
class PendingRotation:
    """A verified chain to commit once the request it came with is accepted."""

    chain: tuple[RotationStatement, ...]


class InBandRotation:
    """The verifier's side: resolve a statement-carrying request, then commit it."""

    def __init__(self, store: AllowListStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def resolve(self, header: str, presented_key: str) -> tuple[TrustedKey, PendingRotation] | None:
        """The entry the request's key would have after the chain, or None (refused)."""
        if len(header) > MAX_HEADER_CHARS:
            return None
        try:
            chain = decode_chain(header)
            if chain[-1].new_key != presented_key:
                return None
            _, entry = apply_chain(self._store.snapshot(), chain, self._clock())
            key = load_public_key(public_key_from_b64(entry.public_key))
        except RotationError as error:
            _log.warning("[amesh] rotation_refused: %s", error.reason)
            return None
        return TrustedKey(entry, key), PendingRotation(chain)

    def commit(self, pending: PendingRotation) -> bool:
        """Apply the chain under the lock against the current file; False if refused now."""
        now = self._clock()

        def change(current: AllowList, stamp: str) -> AllowList:
            return apply_chain(current, pending.chain, now)[0]

        try:
            self._store.update(change)
        except (RotationError, StoreError) as error:
            reason = error.reason if isinstance(error, RotationError) else error.code
            _log.warning("[amesh] rotation_refused: %s", reason)
            return False
        _log.info("[amesh] rotation_applied: seq=%d", pending.chain[-1].seq)
        return True


def acknowledgement(trusted: TrustedKey) -> str:
    """The ack header value for a request verified with ``trusted``."""
    return str(key_seq(trusted.device))


def _stamp(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class RotationAnnouncer:
    """The client's side: the current signer of a home and the chain to announce."""

    def __init__(
        self,
        home: AmeshHome,
        context: Context,
        *,
        recheck_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        load: Callable[[AmeshHome], Context] = load_context,
    ) -> None:
        self._wall_clock = wall_clock
        self._home = home
        self._recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._load = load
        self._lock = threading.Lock()
        self._context = context
        self._identity_stamp = _stamp(home.identity_file)
        self._checked_until = -math.inf
        self._state = load_state(home)
        self._chain = self._state.chain[-MAX_CHAIN:]
        self._acked: dict[str, int] = {}
        self._signer: RequestSigner | None = None
        self._without_rotation: set[str] = set()
        self._retired: RequestSigner | None = None

    @property
    def seq(self) -> int:
        return self._chain[-1].seq if self._chain else 0

    def current(self, signer: RequestSigner) -> RequestSigner:
        """``signer``, or one signer (shared by all threads) for the home's rotated key."""
        if self._monotonic() >= self._checked_until:
            self._reload_if_rotated()
        identity = self._context.identity
        if identity.public_key == signer.public_key_b64:
            return signer
        with self._lock:
            fresh = self._signer
            if fresh is None or fresh.public_key_b64 != identity.public_key:
                fresh = RequestSigner(
                    self._context.signer, identity.public_key, version=signer.version
                )
                fresh.clock_offset = signer.clock_offset
                self._signer = fresh
        return fresh

    def _reload_if_rotated(self) -> None:
        with self._lock:
            self._checked_until = self._monotonic() + self._recheck_seconds
            stamp = _stamp(self._home.identity_file)
            if stamp == self._identity_stamp:
                return
            self._context = self._load(self._home)
            self._identity_stamp = stamp
            self._state = load_state(self._home)
            self._chain = self._state.chain[-MAX_CHAIN:]
            self._retired = None

    def header_for(self, server: str, public_key_b64: str) -> str | None:
        """The chain to send to ``server`` with a request signed by ``public_key_b64``."""
        chain = self._chain
        if not chain or chain[-1].new_key != public_key_b64:
            return None
        acked = self._acked.get(server, -1)
        if acked >= chain[-1].seq:
            return None
        # A server that acknowledged an earlier key needs only the links after it.
        return encode_chain([statement for statement in chain if statement.seq > acked])

    def observe(self, server: str, ack: str | None) -> None:
        """Record a server's acknowledgement (a response header)."""
        if ack is None or not ack.isdigit() or len(ack) > 10:
            return
        if len(self._acked) >= _MAX_ACKED_SERVERS and server not in self._acked:
            self._acked.clear()
        self._acked[server] = int(ack)

    def _retired_signer(self, version: str) -> RequestSigner | None:
        """The key the current one replaced, while its grace period lasts."""
        if not self._chain:
            return None
        previous = self._chain[-1].old_key
        retired = next((k for k in self._state.retired if k.public_key == previous), None)
        if retired is None or retired.destroy_after <= self._wall_clock():
            return None
        cached = self._retired
        if cached is None or cached.public_key_b64 != previous or cached.version != version:
            try:
                key = self._context.keystore.signer(retired.alias)
            except StoreError:
                return None  # destroyed meanwhile
            cached = self._retired = RequestSigner(key, previous, version=version)
        return cached

    def retired_for(self, server: str, version: str) -> RequestSigner | None:
        """For a server that ignored the chain: the retired key while it may still be used."""
        if server not in self._without_rotation:
            return None
        return self._retired_signer(version)

    def fall_back(self, server: str, version: str) -> bool:
        """``server`` refused the new key without acknowledging the chain (a peer without
        rotation support, e.g. TypeScript amesh): use the retired key there, if any is left."""
        retired = self._retired_signer(version)
        if retired is None or server in self._without_rotation:
            _log.warning(
                "[amesh] %s refused the rotated key and its rotation statement: it may not "
                "support rotations, have revoked this device, or have taken another rotation "
                "of the old key (a stolen key?); check it and pair again",
                server,
            )
            return False
        if len(self._without_rotation) >= _MAX_ACKED_SERVERS:
            self._without_rotation.clear()
        self._without_rotation.add(server)
        _log.warning(
            "[amesh] %s refused the rotated key and ignored the rotation statement; signing "
            "with the retired key until it is destroyed: pair that peer again",
            server,
        )
        return True

    def forget(self, server: str) -> None:
        """After a 401 to a request without the chain: drop ``server``'s ack and its use of
        the retired key, and re-check the identity on the next request."""
        self._acked.pop(server, None)
        self._without_rotation.discard(server)
        self._checked_until = -math.inf
