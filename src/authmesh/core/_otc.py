"""The six-digit one-time code that routes two peers to each other on the relay.

The code is not a secret key and enters no cryptographic computation; it only names a
relay session. We draw it uniformly from 100000-999999 (the reference's range); the
reference's own mapping of four random bytes is kept for its test vectors.
"""

from __future__ import annotations

import re
import secrets

__all__ = ["OTC_PATTERN", "generate_otc", "is_valid_otc", "otc_from_random_bytes"]

# ASCII digits only: Python's ``\d`` would also accept other scripts' digits.
OTC_PATTERN = re.compile(r"[0-9]{6}")
_OTC_LOW = 100_000
_OTC_SPAN = 900_000


def generate_otc() -> str:
    """A uniform random code in 100000-999999."""
    return str(secrets.randbelow(_OTC_SPAN) + _OTC_LOW)


def otc_from_random_bytes(random_bytes: bytes) -> str:
    """The reference's mapping: big-endian uint32 ``u`` -> ``u mod 900000 + 100000``."""
    if len(random_bytes) != 4:
        raise ValueError("the reference maps exactly 4 random bytes to a code")
    return str(int.from_bytes(random_bytes, "big") % _OTC_SPAN + _OTC_LOW)


def is_valid_otc(text: object) -> bool:
    """True for exactly six ASCII digits (leading zeros allowed, as the relay accepts them)."""
    return isinstance(text, str) and OTC_PATTERN.fullmatch(text) is not None
