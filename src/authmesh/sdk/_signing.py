"""Transport-free request signing: the Authorization header for one request.

HTTP-library adapters (:mod:`authmesh.sdk._client`) decide the exact request-target
and body bytes that go on the wire and pass them here; this module builds the
canonical string over exactly those, signs it with the identity key and formats the
header. It also keeps a clock offset learned from a server's 401 time hint.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from authmesh.core import AuthHeader, canonical_string
from authmesh.core._b64 import b64encode, b64url_encode
from authmesh.core._canonical import request_target_path

__all__ = [
    "CLOCK_HINT_THRESHOLD_SECONDS",
    "MAX_CLOCK_CORRECTION_SECONDS",
    "KeySigner",
    "RequestSigner",
    "random_nonce",
]

CLOCK_HINT_THRESHOLD_SECONDS = 10
"""A server clock further off than this makes the signer adopt the server's time."""
MAX_CLOCK_CORRECTION_SECONDS = 300
"""Largest correction taken from a hint: a lying server must not make us sign requests
dated far in the future that it could replay elsewhere later."""
_SERVER_TIME = re.compile(r"[0-9]{1,12}")  # ASCII only: "²".isdigit() is True, int("²") fails


class KeySigner(Protocol):
    """What the signer needs of a key: ``authmesh.core._keys.PrivateKey`` or a store signer."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def random_nonce() -> str:
    """16 CSPRNG bytes, base64url without padding (22 characters), as the reference."""
    return b64url_encode(secrets.token_bytes(16))


class RequestSigner:
    """Signs requests for one identity.

    ``public_key_b64`` is sent verbatim as the header ``id`` and must be the string
    the peer stored at pairing (``identity.json``'s ``publicKey``, W2); it defaults
    to the standard base64 of ``signer.public_key``. ``version`` ``"2"`` also signs
    the authority (``host[:port]``) — use it only with peers paired with v2.
    """

    def __init__(
        self,
        signer: KeySigner,
        public_key_b64: str | None = None,
        *,
        version: str = "1",
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = random_nonce,
    ) -> None:
        if version not in ("1", "2"):
            raise ValueError(f"signature version must be '1' or '2', not {version!r}")
        self._signer = signer
        self.public_key_b64 = public_key_b64 or b64encode(signer.public_key)
        self.version = version
        self._clock = clock
        self._nonce = nonce
        self.clock_offset = 0

    def now(self) -> int:
        """Unix seconds as sent in ``ts``: the local clock plus any learned offset."""
        return math.floor(self._clock()) + self.clock_offset

    def authorization(
        self, method: str, target: str, body_hash: str, authority: str | None = None
    ) -> str:
        """The header value for a request sending ``target`` and a body hashing to ``body_hash``.

        ``target`` must already be in the form :func:`request_target_path` gives
        (the adapters send exactly that); ``authority`` is required for version 2.
        """
        timestamp = str(self.now())
        nonce = self._nonce()
        message = canonical_string(
            method.upper(),
            request_target_path(target),
            timestamp,
            nonce,
            body_hash,
            version=self.version,
            authority=authority if self.version == "2" else None,
        )
        signature = b64url_encode(self._signer.sign(message.encode("utf-8")))
        return AuthHeader(self.version, self.public_key_b64, timestamp, nonce, signature).format()

    def learn_server_time(self, server_time_text: str | None) -> bool:
        """Adopt the server's clock from a 401 hint when ours is off; True if it changed."""
        if not server_time_text or not _SERVER_TIME.fullmatch(server_time_text):
            return False
        offset = int(server_time_text) - math.floor(self._clock())
        if abs(offset) > MAX_CLOCK_CORRECTION_SECONDS:
            return False
        if abs(offset - self.clock_offset) <= CLOCK_HINT_THRESHOLD_SECONDS:
            return False
        self.clock_offset = offset
        return True
