"""The ``Authorization: AuthMesh ...`` header: formatter and parser.

The formatter writes exactly what the reference client sends (spec §4.1)::

    AuthMesh v="1",id="<b64 public key>",ts="<unix seconds>",nonce="<nonce>",sig="<b64url sig>"

The parser accepts exactly what the reference ``parseAuthHeader`` accepts (§4.2),
so reference clients keep working: the value must start with ``"AuthMesh "``, be
at most 1024 UTF-16 code units long, and every ``key="value"`` pair found by a
left-to-right scan must name one of the five fields, at most once, within that
field's length cap; all five must be present and non-empty. Text between pairs
is skipped, as in the reference. Every rejection raises :class:`HeaderError`
whose ``reason`` tells a missing header apart from a malformed one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FIELD_CAPS",
    "MAX_HEADER_LENGTH",
    "SCHEME",
    "AuthHeader",
    "HeaderError",
    "js_length",
    "parse_header",
]

SCHEME: Final = "AuthMesh"
MAX_HEADER_LENGTH: Final = 1024
FIELD_CAPS: Final = {"v": 8, "id": 128, "ts": 16, "nonce": 64, "sig": 256}
"""Longest accepted value per field, in UTF-16 code units."""

_PREFIX: Final = SCHEME + " "
# JS \w is ASCII-only; the value runs to the next double quote (no escaping).
_PAIR: Final = re.compile(r'([A-Za-z0-9_]+)="([^"]*)"')
# The exact layout every client writes (see ``AuthHeader.format``): for ASCII values it
# parses to the same fields as the scan below, in one regex call instead of a loop.
_FORMATTED: Final = re.compile(
    r'AuthMesh v="([^"]{1,8})",id="([^"]{1,128})",ts="([^"]{1,16})",'
    r'nonce="([^"]{1,64})",sig="([^"]{1,256})"'
)


class HeaderError(ValueError):
    """The Authorization header is missing or is not a valid AuthMesh header.

    ``reason`` is one of ``absent``, ``wrong_scheme``, ``header_too_long``,
    ``duplicate_key``, ``unknown_key``, ``field_too_long``, ``missing_field``,
    ``invalid_value`` (the last only from :meth:`AuthHeader.format`).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def js_length(text: str) -> int:
    """Length in UTF-16 code units, as JavaScript's ``.length`` counts it."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """The five fields of an AuthMesh header, as strings exactly as sent."""

    v: str
    id: str
    ts: str
    nonce: str
    sig: str

    def format(self) -> str:
        """The header value in the reference's field order and spacing.

        Raises :class:`HeaderError` (``invalid_value``) if a field is empty,
        contains a double quote or exceeds its cap — the parser would refuse it.
        """
        fields = {"v": self.v, "id": self.id, "ts": self.ts, "nonce": self.nonce, "sig": self.sig}
        for key, value in fields.items():
            if not value or '"' in value or js_length(value) > FIELD_CAPS[key]:
                raise HeaderError("invalid_value", f"header field {key} cannot be sent as is")
        return _PREFIX + ",".join(f'{key}="{value}"' for key, value in fields.items())


def parse_header(value: str | None) -> AuthHeader:
    """Parse an Authorization header value (surrounding whitespace already removed).

    Raises :class:`HeaderError`; ``reason == "absent"`` for a missing or empty
    value (the middleware's ``missing_header``), any other reason for a value
    the middleware answers with ``malformed_header``.
    """
    if not value:
        raise HeaderError("absent", "the Authorization header is missing")
    if len(value) <= MAX_HEADER_LENGTH and value.isascii():
        formatted = _FORMATTED.fullmatch(value)
        if formatted is not None:
            return AuthHeader(*formatted.groups())
    if not value.startswith(_PREFIX):
        raise HeaderError(
            "wrong_scheme", 'the Authorization header does not start with "AuthMesh "'
        )
    if js_length(value) > MAX_HEADER_LENGTH:
        raise HeaderError(
            "header_too_long", "the Authorization header is longer than 1024 characters"
        )
    fields = _fields(value)
    missing = [key for key in FIELD_CAPS if not fields.get(key)]
    if missing:
        raise HeaderError("missing_field", f"the Authorization header lacks {', '.join(missing)}")
    return AuthHeader(**fields)


def _fields(value: str) -> dict[str, str]:
    """The ``key="value"`` pairs after the scheme, each key once, known and within its cap."""
    fields: dict[str, str] = {}
    for match in _PAIR.finditer(value, len(_PREFIX)):
        key, field = match.group(1), match.group(2)
        if key in fields:
            raise HeaderError("duplicate_key", f"the Authorization header repeats {key}")
        if key not in FIELD_CAPS:
            raise HeaderError("unknown_key", "the Authorization header has an unknown field")
        if js_length(field) > FIELD_CAPS[key]:
            raise HeaderError("field_too_long", f"the Authorization header field {key} is too long")
        fields[key] = field
    return fields
