"""Session keys and the sealed envelope of the pairing handshake.

The shared secret is the ECDH x-coordinate from :meth:`authmesh.core._keys.PrivateKey.exchange`.
:func:`hkdf_sha256` turns it into keys; pairing v1 uses one key for both directions
(:func:`session_key`: salt ``amesh-handshake-v1``, info ``session-key``), pairing v2 derives
one key per direction with distinct ``info`` strings. A sealed blob is
``nonce(12) || ciphertext || tag(16)`` under ChaCha20-Poly1305 (RFC 8439), sent as standard
base64. The nonce is random unless a caller injects one (test vectors, counter nonces).
Every way a blob can fail to open raises :class:`TunnelError` and nothing else.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authmesh.core._b64 import B64Error, b64decode, b64encode

__all__ = [
    "HANDSHAKE_SALT",
    "KEY_LENGTH",
    "NONCE_LENGTH",
    "SESSION_KEY_INFO",
    "TAG_LENGTH",
    "TunnelError",
    "hkdf_sha256",
    "open_b64",
    "open_blob",
    "seal_b64",
    "seal_blob",
    "session_key",
]

HANDSHAKE_SALT = b"amesh-handshake-v1"
SESSION_KEY_INFO = b"session-key"
KEY_LENGTH = 32
NONCE_LENGTH = 12
TAG_LENGTH = 16


class TunnelError(ValueError):
    """A sealed blob could not be opened (malformed, truncated, tampered or wrong key)."""


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = KEY_LENGTH) -> bytes:
    """RFC 5869 HKDF with SHA-256."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def session_key(shared_secret: bytes) -> bytes:
    """The pairing v1 session key: HKDF(ss, salt ``amesh-handshake-v1``, info ``session-key``)."""
    return hkdf_sha256(shared_secret, salt=HANDSHAKE_SALT, info=SESSION_KEY_INFO)


def seal_blob(
    key: bytes, plaintext: bytes, *, aad: bytes = b"", nonce: bytes | None = None
) -> bytes:
    """Encrypt to ``nonce || ciphertext || tag``; the nonce is random unless given."""
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_LENGTH)
    if len(nonce) != NONCE_LENGTH:
        raise ValueError("nonce must be 12 bytes")
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad or None)


def open_blob(key: bytes, blob: bytes, *, aad: bytes = b"") -> bytes:
    """Decrypt ``nonce || ciphertext || tag``; raises :class:`TunnelError` on any failure."""
    if len(blob) < NONCE_LENGTH + TAG_LENGTH:
        raise TunnelError("sealed message is too short")
    try:
        return ChaCha20Poly1305(key).decrypt(blob[:NONCE_LENGTH], blob[NONCE_LENGTH:], aad or None)
    except InvalidTag as exc:
        raise TunnelError("sealed message failed authentication") from exc


def seal_b64(key: bytes, plaintext: bytes, *, aad: bytes = b"", nonce: bytes | None = None) -> str:
    """:func:`seal_blob` as standard base64, the form carried in a relay ``data`` payload."""
    return b64encode(seal_blob(key, plaintext, aad=aad, nonce=nonce))


def open_b64(key: bytes, payload: str, *, aad: bytes = b"") -> bytes:
    """Open a base64 payload from :func:`seal_b64`; raises :class:`TunnelError` on any failure."""
    try:
        blob = b64decode(payload)
    except B64Error as exc:
        raise TunnelError("sealed message is not valid base64") from exc
    return open_blob(key, blob, aad=aad)
