"""The short authentication string (SAS) shown on one screen and typed on the other.

v1 (the reference, [wire]): ``%06d`` of the big-endian uint24 of
``SHA-256(target_pub || controller_pub || shared_secret)[0:3]`` modulo 10**6, target key
first whatever side computes it. Pairing v2 derives its SAS from the handshake key schedule
instead (see :mod:`authmesh.pairing`), formatted by :func:`format_sas`.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SAS_DIGITS", "compute_sas", "format_sas", "sas_matches"]

SAS_DIGITS = 6
_SAS_MODULUS = 10**SAS_DIGITS


def format_sas(value: int) -> str:
    """``value mod 10**6`` as six zero-padded decimal digits."""
    return f"{value % _SAS_MODULUS:0{SAS_DIGITS}d}"


def compute_sas(
    target_public_key: bytes, controller_public_key: bytes, shared_secret: bytes
) -> str:
    """The v1 SAS over the long-term keys (target first) and the ephemeral ECDH secret."""
    digest = hashlib.sha256(target_public_key + controller_public_key + shared_secret).digest()
    return format_sas(int.from_bytes(digest[:3], "big"))


def sas_matches(entered: str, computed: str) -> bool:
    """Constant-time comparison of what the operator typed with the computed SAS.

    Like the reference's ``verifySAS`` it does not trim; callers strip the operator's
    input first.
    """
    return hmac.compare_digest(entered.encode("utf-8"), computed.encode("utf-8"))
