"""The shell session cipher: ChaCha20-Poly1305 with per-direction counters (spec shell §4).

One 32-byte session key serves both directions; the nonce keeps them apart:
``nonce[0]`` is ``0x00`` for controller->target and ``0x80`` for target->controller,
``nonce[1..3]`` are zero and ``nonce[4..11]`` is the sender's 64-bit big-endian counter.
A message is ``nonce || ciphertext || tag`` (no associated data).

Receiving is strictly sequential: the nonce must equal the peer's direction prefix plus our
receive counter (compared in constant time), and the counter advances only once the frame has
authenticated (audit H3), so a forged or corrupted frame is dropped without desynchronising
the session. Replays, reordering, reflection and modified nonces are all rejected. The last
usable counter is ``2**64 - 2``; at ``2**64 - 1`` both sending and receiving are refused.

:func:`seal_message` and :func:`open_message` are the stateless primitives (explicit counter);
:class:`ShellCipher` holds the counters for a live session.
"""

from __future__ import annotations

import hmac
from enum import Enum

from authmesh.core._tunnel import (
    KEY_LENGTH,
    NONCE_LENGTH,
    TAG_LENGTH,
    TunnelError,
    open_blob,
    seal_blob,
)

__all__ = [
    "COUNTER_LIMIT",
    "MIN_MESSAGE_LENGTH",
    "CipherErrorCode",
    "Role",
    "ShellCipher",
    "ShellCipherError",
    "message_nonce",
    "open_message",
    "seal_message",
]

MIN_MESSAGE_LENGTH = NONCE_LENGTH + TAG_LENGTH
# The first counter that may not be used; 2**64 - 2 is the last usable one.
COUNTER_LIMIT = 2**64 - 1


class Role(Enum):
    """A party of a shell session; the value is the nonce prefix of what it sends."""

    CONTROLLER = 0x00
    TARGET = 0x80

    @property
    def peer(self) -> Role:
        return Role.TARGET if self is Role.CONTROLLER else Role.CONTROLLER


class CipherErrorCode(Enum):
    """Why a message was refused; values are the reference's error texts."""

    BAD_KEY = "Shell cipher key must be 32 bytes"
    TOO_SHORT = "Ciphertext too short"
    NONCE_MISMATCH = "Nonce mismatch — possible replay or out-of-order frame"
    AUTHENTICATION_FAILED = "invalid tag"
    EXHAUSTED = "Nonce space exhausted"
    CLOSED = "Cipher is closed"


class ShellCipherError(ValueError):
    """A message could not be sealed or opened; ``code`` says which check failed."""

    def __init__(self, code: CipherErrorCode) -> None:
        super().__init__(code.value)
        self.code = code


def message_nonce(sender: Role, counter: int) -> bytes:
    """The 12-byte nonce ``prefix || 000000 || counter(u64 BE)`` for ``sender``."""
    if not 0 <= counter < COUNTER_LIMIT:
        raise ShellCipherError(CipherErrorCode.EXHAUSTED)
    return bytes([sender.value, 0, 0, 0]) + counter.to_bytes(8, "big")


def _check_key(key: bytes) -> bytes:
    if len(key) != KEY_LENGTH:
        raise ShellCipherError(CipherErrorCode.BAD_KEY)
    return key


def seal_message(key: bytes, sender: Role, counter: int, frame: bytes) -> bytes:
    """Encrypt ``frame`` as message number ``counter`` from ``sender``."""
    return seal_blob(_check_key(key), frame, nonce=message_nonce(sender, counter))


def open_message(key: bytes, sender: Role, counter: int, message: bytes) -> bytes:
    """Decrypt message number ``counter`` from ``sender``; raises :class:`ShellCipherError`.

    Checks, in the reference's order: length, nonce (constant time), then authentication.
    """
    if len(message) < MIN_MESSAGE_LENGTH:
        raise ShellCipherError(CipherErrorCode.TOO_SHORT)
    expected = message_nonce(sender, counter)
    if not hmac.compare_digest(message[:NONCE_LENGTH], expected):
        raise ShellCipherError(CipherErrorCode.NONCE_MISMATCH)
    try:
        return open_blob(_check_key(key), message)
    except TunnelError:
        raise ShellCipherError(CipherErrorCode.AUTHENTICATION_FAILED) from None


class ShellCipher:
    """Session cipher for one party: seals what ``role`` sends, opens what its peer sends."""

    __slots__ = ("_key", "_recv_counter", "_send_counter", "role")

    def __init__(self, key: bytes, role: Role) -> None:
        self._key: bytes | None = _check_key(bytes(key))
        self.role = role
        self._send_counter = 0
        self._recv_counter = 0

    @property
    def send_counter(self) -> int:
        """Counter of the next message we send."""
        return self._send_counter

    @property
    def recv_counter(self) -> int:
        """Counter the next accepted message must carry."""
        return self._recv_counter

    @property
    def closed(self) -> bool:
        return self._key is None

    def encrypt(self, frame: bytes) -> bytes:
        """Seal the next outgoing frame; its counter is spent even if the message is never sent."""
        message = seal_message(self._live(), self.role, self._send_counter, frame)
        self._send_counter += 1
        return message

    def decrypt(self, message: bytes) -> bytes:
        """Open the next incoming message; the counter advances only if it authenticates."""
        frame = open_message(self._live(), self.role.peer, self._recv_counter, message)
        self._recv_counter += 1
        return frame

    def close(self) -> None:
        """Forget the key; every later call raises ``Cipher is closed``.

        The reference zeroes its key buffer; Python bytes are immutable, so dropping the
        only reference is the closest equivalent.
        """
        self._key = None

    def _live(self) -> bytes:
        if self._key is None:
            raise ShellCipherError(CipherErrorCode.CLOSED)
        return self._key
