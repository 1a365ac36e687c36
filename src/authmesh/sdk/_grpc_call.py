"""Signing and verifying gRPC calls, without gRPC: the canonical form and its checks.

The gRPC form is an authmesh extension (docs/protocol.md §10), domain-separated from
the HTTP strings of §3.1 and §3.3 by its own first line, so no signature made for a
gRPC call verifies as an HTTP request or the reverse::

    "AMgrpc1" LF AUTHORITY LF METHOD LF TS LF NONCE LF MESSAGES

``METHOD`` is the full method path (``/package.Service/Method``), ``AUTHORITY`` the
normalised ``host[:port]`` the client addressed (sent in ``x-authmesh-authority``),
``MESSAGES`` the lowercase hex SHA-256 over every request message of the call, each
as a 4-byte big-endian length followed by its serialized bytes: one message for a
unary request, all of them for a request stream (whole-call coverage).

The header is the HTTP one (``authorization`` metadata, ``v="2"``), so the allow list,
clock window, roles, authority list and nonce store of :class:`Verifier` apply as they
are; nonces share the HTTP namespace, so one nonce is good for one request or call.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from time import perf_counter

from authmesh.core import AsyncNonceStore, AuthHeader, CanonicalError, NonceStore
from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode
from authmesh.core._canonical import normalize_authority
from authmesh.core._keys import verify_with_key
from authmesh.sdk._home import resolve_home
from authmesh.sdk._metrics import Outcome
from authmesh.sdk._signing import KeySigner, random_nonce
from authmesh.sdk._verifier import PendingRequest, Rejection, VerifiedDevice, Verifier
from authmesh.store import load_context

__all__ = [
    "AUTHORITY_METADATA",
    "AUTHORIZATION_METADATA",
    "CallSigner",
    "CallVerifier",
    "MessageDigest",
    "grpc_canonical_string",
]

AUTHORIZATION_METADATA = "authorization"
AUTHORITY_METADATA = "x-authmesh-authority"
SERVER_TIME_METADATA = "x-authmesh-server-time"
"""Trailing metadata of a call refused as unauthorized: the server's clock."""
_DOMAIN = "AMgrpc1"
_VERSION = "2"  # the header version whose checks (authority) the gRPC form needs
_LENGTH_PREFIX_BYTES = 4
_log = logging.getLogger("authmesh.sdk")


class MessageDigest:
    """SHA-256 over the length-prefixed request messages of one call, in order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0
        """Bytes taken so far, prefixes included: what the body limit bounds."""

    def add(self, message: bytes) -> None:
        self._hash.update(len(message).to_bytes(_LENGTH_PREFIX_BYTES, "big"))
        self._hash.update(message)
        self.size += _LENGTH_PREFIX_BYTES + len(message)

    @classmethod
    def of(cls, messages: Iterable[bytes]) -> str:
        digest = cls()
        for message in messages:
            digest.add(message)
        return digest.hexdigest()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def grpc_canonical_string(
    authority: str, method: str, timestamp: str, nonce: str, messages_hash: str
) -> str:
    """The string a gRPC call's signature covers; :class:`CanonicalError` on a newline."""
    fields = (authority, method, timestamp, nonce, messages_hash)
    if any("\n" in field for field in fields):
        raise CanonicalError("Canonical string fields must not contain newlines")
    return "\n".join((_DOMAIN, *fields))


class CallSigner:
    """Signs calls for one identity to one ``authority`` (the channel's ``host[:port]``)."""

    def __init__(
        self,
        signer: KeySigner,
        authority: str,
        public_key_b64: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = random_nonce,
    ) -> None:
        self._signer = signer
        self.authority = normalize_authority(authority)
        self.public_key_b64 = public_key_b64 or b64encode(signer.public_key)
        self._clock = clock
        self._nonce = nonce

    @classmethod
    def from_home(cls, authority: str, home: str | os.PathLike[str] | None = None) -> CallSigner:
        """Sign as the identity in ``home`` (default ``$AUTH_MESH_DIR`` or ``~/.amesh``)."""
        context = load_context(resolve_home(home))
        return cls(context.signer, authority, context.identity.public_key)

    def metadata(self, method: str, messages_hash: str) -> tuple[tuple[str, str], ...]:
        """The two metadata entries that authenticate a call to ``method``."""
        timestamp = str(math.floor(self._clock()))
        nonce = self._nonce()
        message = grpc_canonical_string(self.authority, method, timestamp, nonce, messages_hash)
        signature = b64url_encode(self._signer.sign(message.encode("utf-8")))
        header = AuthHeader(_VERSION, self.public_key_b64, timestamp, nonce, signature).format()
        return ((AUTHORIZATION_METADATA, header), (AUTHORITY_METADATA, self.authority))


def metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The first text value of ``key`` (lowercase) in call metadata."""
    for name, value in metadata or ():
        if name == key and isinstance(value, str):
            return value.strip(" \t")
    return None


class CallVerifier:
    """The gRPC side of a :class:`Verifier`: same allow list, clock, authorities and nonces."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    def begin(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> PendingRequest:
        """Header, caller, clock and authority checks; raise :class:`Rejection`."""
        authorization = metadata_value(metadata, AUTHORIZATION_METADATA)
        pending = self.verifier.begin(
            "POST", method, authorization, metadata_value(metadata, AUTHORITY_METADATA)
        )
        if pending.version != _VERSION:
            rejection = Rejection(400, "unsupported_version", outcome=Outcome.MALFORMED)
            self._report(rejection.outcome, 400, pending.seconds, pending.version)
            raise rejection
        return pending

    def finish(self, pending: PendingRequest, messages_hash: str) -> VerifiedDevice:
        """Verify the signature, then record the nonce in a synchronous store."""
        started = perf_counter()
        try:
            key = self._check(pending, messages_hash)
            store: NonceStore = self.verifier.nonce_store  # type: ignore[assignment]
            fresh = self._stored(store.check_and_store, key)
        except Rejection as rejection:
            self._finished(pending, started, rejection)
            raise
        return self._accepted(pending, fresh, started)

    async def finish_async(self, pending: PendingRequest, messages_hash: str) -> VerifiedDevice:
        """As :meth:`finish`, awaiting an async nonce store when the verifier has one."""
        if not self.verifier.nonce_store_is_async:
            return self.finish(pending, messages_hash)
        started = perf_counter()
        try:
            key = self._check(pending, messages_hash)
            store: AsyncNonceStore = self.verifier.nonce_store  # type: ignore[assignment]
            fresh = await self._stored_async(store.check_and_store(key, self._ttl))
        except Rejection as rejection:
            self._finished(pending, started, rejection)
            raise
        return self._accepted(pending, fresh, started)

    @property
    def _ttl(self) -> int:
        return self.verifier.nonce_ttl_seconds

    def _check(self, pending: PendingRequest, messages_hash: str) -> str:
        """Verify the signature; return the nonce-store key to record."""
        assert pending.authority is not None  # version 2 always carries one
        try:
            message = grpc_canonical_string(
                pending.authority, pending.path, pending.timestamp, pending.nonce, messages_hash
            ).encode("utf-8")
            key = pending.trusted.public_key
            valid = key is not None and verify_with_key(key, b64decode(pending.signature), message)
        except (CanonicalError, B64Error):
            valid = False
        if not valid:
            raise self._unauthorized("invalid_signature", pending, Outcome.BAD_SIGNATURE)
        return f"{pending.trusted.device.device_id}:{pending.nonce}"

    def _stored(self, check_and_store: Callable[[str, int], bool], key: str) -> bool:
        try:
            return check_and_store(key, self._ttl)
        except Exception:  # whatever the store raised, fail closed
            raise self._store_failed() from None

    async def _stored_async(self, fresh: Awaitable[bool]) -> bool:
        try:
            return await fresh
        except Exception:  # whatever the store raised, fail closed
            raise self._store_failed() from None

    def _accepted(self, pending: PendingRequest, fresh: bool, started: float) -> VerifiedDevice:
        if not fresh:
            rejection = self._unauthorized("replay_detected", pending, Outcome.REPLAY)
            self._finished(pending, started, rejection)
            raise rejection
        self._finished(pending, started, None)
        device = pending.trusted.device
        return VerifiedDevice(device.device_id, device.friendly_name, pending.now, pending.version)

    def _finished(self, pending: PendingRequest, started: float, error: Rejection | None) -> None:
        seconds = pending.seconds + perf_counter() - started
        if error is None:
            self._report(Outcome.ACCEPTED, 200, seconds, pending.version)
        else:
            self._report(error.outcome, error.status, seconds, pending.version)

    def _report(self, outcome: Outcome, status: int, seconds: float, version: str) -> None:
        if self.verifier.observer is not None:
            self.verifier.observer.observe(outcome, status, seconds, version)

    def take(self, digest: MessageDigest, message: bytes) -> None:
        """Hash one more request message; 413 once the call's messages exceed the body limit."""
        digest.add(message)
        if digest.size > self.verifier.max_body_bytes:
            raise self.verifier.too_large()

    @staticmethod
    def _unauthorized(event: str, pending: PendingRequest, outcome: Outcome) -> Rejection:
        _log.warning(
            "[amesh] grpc %s: serverNow=%d requestTs=%s", event, pending.now, pending.timestamp
        )
        return Rejection(401, "unauthorized", server_time=pending.now, outcome=outcome)

    @staticmethod
    def _store_failed() -> Rejection:
        _log.error("[amesh] nonce store unavailable: refusing the call (fail closed)")
        return Rejection(500, "internal_error", outcome=Outcome.STORE_FAILURE)
