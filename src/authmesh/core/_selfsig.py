"""Pairing v1 identity self-signature (``selfSig``) and the signer interface.

``selfSig = base64(ECDSA(priv, UTF-8(publicKey_b64 || friendlyName || timestamp)))`` — a
plain concatenation of the strings exactly as they travel, no delimiters, no transcript
([wire]; pairing.md §1.9). It is kept only for legacy pairing; its weaknesses (shifting
field boundaries, no binding to the session, W4) are why pairing v2 signs a delimited,
transcript-bound statement instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._keys import verify

__all__ = [
    "Signer",
    "iso_timestamp",
    "selfsig_message",
    "sign_selfsig",
    "verify_selfsig",
]


class Signer(Protocol):
    """A long-term identity key: software, TPM or any other keystore backend."""

    @property
    def public_key(self) -> bytes:
        """33-byte compressed P-256 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """64-byte low-S ``r || s`` ECDSA-SHA256 signature over ``message``."""
        ...


def iso_timestamp(unix_seconds: float) -> str:
    """JavaScript ``Date.toISOString()`` form: UTC, milliseconds, trailing ``Z``."""
    moment = datetime.fromtimestamp(unix_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def selfsig_message(public_key_b64: str, friendly_name: str, timestamp: str) -> bytes:
    """The bytes a v1 selfSig covers."""
    return (public_key_b64 + friendly_name + timestamp).encode("utf-8")


def sign_selfsig(signer: Signer, public_key_b64: str, friendly_name: str, timestamp: str) -> str:
    """The base64 selfSig over the strings as they will be sent."""
    return b64encode(signer.sign(selfsig_message(public_key_b64, friendly_name, timestamp)))


def verify_selfsig(public_key_b64: str, friendly_name: str, timestamp: str, selfsig: str) -> bool:
    """Verify against the key decoded from ``public_key_b64``; never raises.

    Uncompressed keys are refused (pairing.md §1.1): the reference would accept them and
    let 65 bytes flow into the SAS, the device id and the allow list.
    """
    try:
        public_key = b64decode(public_key_b64)
        signature = b64decode(selfsig)
    except B64Error:
        return False
    if len(public_key) != 33:
        return False
    return verify(public_key, signature, selfsig_message(public_key_b64, friendly_name, timestamp))
