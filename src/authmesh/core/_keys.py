"""P-256 keys, device ids and raw low-S ECDSA exactly as the reference uses them.

Signatures are 64-byte ``r || s`` with ``s <= n/2``; software keys sign with
RFC 6979 deterministic ``k`` so our signatures equal the reference's byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode

__all__ = [
    "CURVE_ORDER",
    "InvalidKeyError",
    "PrivateKey",
    "compress",
    "der_to_raw",
    "device_id",
    "load_public_key",
    "normalize_low_s",
    "public_key_from_b64",
    "verify",
    "verify_with_key",
]

CURVE_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_ORDER = CURVE_ORDER // 2
_SIGNATURE_LENGTH = 64
_COMPRESSED_LENGTH = 33
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class InvalidKeyError(ValueError):
    """A key or signature is malformed."""


def device_id(public_key: bytes) -> str:
    """``"am_"`` + first 16 chars of base64url(SHA-256(compressed public key))."""
    return "am_" + b64url_encode(hashlib.sha256(public_key).digest())[:16]


def load_public_key(data: bytes, *, allow_uncompressed: bool = False) -> ec.EllipticCurvePublicKey:
    """Decode a SEC1 point, requiring 33-byte compressed form unless told otherwise."""
    if len(data) != _COMPRESSED_LENGTH and not (allow_uncompressed and len(data) == 65):
        raise InvalidKeyError("public key must be a 33-byte compressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)
    except ValueError as exc:
        raise InvalidKeyError("public key is not a valid P-256 point") from exc


def public_key_from_b64(text: str) -> bytes:
    """Decode a base64 public key and check it is a valid compressed point."""
    try:
        raw = b64decode(text)
    except B64Error as exc:
        raise InvalidKeyError("public key is not valid base64") from exc
    load_public_key(raw)
    return raw


def compress(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """33-byte SEC1 compressed encoding."""
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )


def normalize_low_s(signature: bytes) -> bytes:
    """Replace ``s`` by ``n - s`` when ``s > n/2`` (the reference rejects high S)."""
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if s > _HALF_ORDER:
        s = CURVE_ORDER - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def der_to_raw(der: bytes) -> bytes:
    """Convert a DER ECDSA signature to low-S raw ``r || s``."""
    r, s = decode_dss_signature(der)
    return normalize_low_s(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Verify a raw low-S signature over ``message`` (hashed once with SHA-256).

    Returns False, never raises, for any malformed key or signature, high S,
    or r/s outside ``[1, n-1]`` — the reference's rules. Uncompressed keys are
    accepted here as the reference does; callers that store keys require 33 bytes.
    """
    try:
        key = load_public_key(public_key, allow_uncompressed=True)
    except InvalidKeyError:
        return False
    return verify_with_key(key, signature, message)


def verify_with_key(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """:func:`verify` for a key decoded once (verifiers cache loaded keys per device)."""
    if len(signature) != _SIGNATURE_LENGTH:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < CURVE_ORDER and 0 < s <= _HALF_ORDER):
        return False
    try:
        key.verify(encode_dss_signature(r, s), message, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A software P-256 private key."""

    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_scalar(cls, scalar: bytes) -> PrivateKey:
        """Load a 32-byte big-endian scalar in ``[1, n-1]``."""
        if len(scalar) != 32:
            raise InvalidKeyError("private key must be 32 bytes")
        value = int.from_bytes(scalar, "big")
        if not 0 < value < CURVE_ORDER:
            raise InvalidKeyError("private key is out of range for P-256")
        return cls(ec.derive_private_key(value, ec.SECP256R1()))

    def scalar(self) -> bytes:
        return self.key.private_numbers().private_value.to_bytes(32, "big")

    @property
    def public_key(self) -> bytes:
        """33-byte compressed public key."""
        return compress(self.key.public_key())

    @property
    def public_key_b64(self) -> str:
        return b64encode(self.public_key)

    @property
    def device_id(self) -> str:
        return device_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """RFC 6979 deterministic ECDSA-SHA256, low-S, raw ``r || s``."""
        der = self.key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        return der_to_raw(der)

    def exchange(self, peer_public_key: bytes) -> bytes:
        """ECDH: the 32-byte x-coordinate of ``self * peer`` (compressed peer key only)."""
        peer = load_public_key(peer_public_key)
        return self.key.exchange(ec.ECDH(), peer)
