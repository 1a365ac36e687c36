"""Base64 encoders and a strict decoder.

The reference decodes with Node's lenient ``Buffer`` decoder, which skips unknown
characters. We accept what a conforming peer can send (either alphabet, padding
optional) and reject everything else, so a mangled field is an error instead of
silently different bytes.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["B64Error", "b64decode", "b64encode", "b64url_encode"]

_ALPHABET = re.compile(r"[A-Za-z0-9+/_-]*")


class B64Error(ValueError):
    """The text is not base64 in either alphabet."""


def b64encode(data: bytes) -> str:
    """Standard alphabet with padding (keys, ``selfSig``, AEAD blobs)."""
    return base64.b64encode(data).decode("ascii")


def b64url_encode(data: bytes) -> str:
    """URL-safe alphabet without padding (device ids, token segments, header ``sig``)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode base64 in the standard or URL-safe alphabet, padding optional.

    Raises :class:`B64Error` for characters outside both alphabets, misplaced or
    excess padding, an impossible length, or non-zero trailing bits.
    """
    if not isinstance(text, str):
        raise B64Error("base64 input must be text")
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if not _ALPHABET.fullmatch(body):
        raise B64Error("base64 input contains characters outside the alphabet")
    if len(body) % 4 == 1:
        raise B64Error("base64 input has an impossible length")
    if padding and (len(body) + padding) % 4 != 0:
        raise B64Error("base64 input has wrong padding")
    if "-" in body or "_" in body:
        if "+" in body or "/" in body:
            raise B64Error("base64 input mixes the standard and URL-safe alphabets")
        body = body.replace("-", "+").replace("_", "/")
    padded = body + "=" * (-len(body) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:  # pragma: no cover - guarded by the checks above
        raise B64Error("base64 input is malformed") from exc
    if base64.b64encode(data).decode("ascii") != padded:
        raise B64Error("base64 input has non-zero trailing bits")
    return data
