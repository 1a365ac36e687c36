"""Bootstrap tokens: mint, decode and validate ``amesh-bt-v1.<H>.<P>.<S>`` ([wire], pairing.md §4).

``H`` and ``P`` are base64url (no padding) compact JSON; ``S`` is the issuer's 64-byte low-S
ECDSA signature over ``ASCII(H "." P)`` (the prefix is not signed), base64url without padding.

:func:`validate_token` runs the reference's checks in the reference's order and raises
:class:`BootstrapTokenError` carrying the reference's code. It never raises anything else,
whatever the input. Where we are stricter (each a fix for pairing.md §5 W6):

* undecodable JSON, ``null`` or any non-object segment is ``invalid_token_format`` (the
  reference throws an uncoded ``SyntaxError``/``TypeError``);
* segments must be strict base64 (either alphabet, optional padding, nothing else);
* the 24 h lifetime cap (``exp - iat <= 86400``) is enforced at validation as well as at
  generation: ``token_lifetime_too_long``, checked right after expiry.

The controller's bootstrap acknowledgement (§4.6) is signed and verified here too.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, NoReturn, TypeGuard

from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode
from authmesh.core._keys import InvalidKeyError, device_id, public_key_from_b64, verify
from authmesh.core._selfsig import Signer

__all__ = [
    "ACK_PREFIX",
    "CLOCK_SKEW_SECONDS",
    "ERROR_CODES",
    "MAX_TOKEN_LENGTH",
    "MAX_TTL_SECONDS",
    "TOKEN_PREFIX",
    "BootstrapToken",
    "BootstrapTokenError",
    "ack_message",
    "decode_token",
    "mint_token",
    "new_jti",
    "parse_ttl",
    "sign_ack",
    "validate_token",
    "verify_ack",
]

TOKEN_PREFIX = "amesh-bt-v1."  # noqa: S105 - a format marker, not a secret
ACK_PREFIX = "amesh-bootstrap-ack-v1"
MAX_TTL_SECONDS = 86_400
CLOCK_SKEW_SECONDS = 60
# Real tokens are ~500 characters; the bound keeps a hostile input from costing much.
MAX_TOKEN_LENGTH = 8192

_HEADER = {"typ": "amesh-bootstrap", "ver": "1", "alg": "ES256"}
_SCOPE = "peer:add"
_TTL_PATTERN = re.compile(r"([0-9]+)(m|h)")

_MESSAGES = {
    "invalid_token_format": "The bootstrap token is malformed; copy the whole token that "
    "`amesh provision` printed.",
    "invalid_token_type": "This is not an amesh bootstrap token; use the token that "
    "`amesh provision` printed.",
    "unsupported_token_version": "This bootstrap token version is not supported; mint a new "
    "token with `amesh provision`.",
    "unsupported_token_alg": "The bootstrap token uses an unsupported signature algorithm; mint "
    "a new token with `amesh provision`.",
    "unsupported_token_scope": "The bootstrap token does not grant peer:add; mint a new token "
    "with `amesh provision`.",
    "token_must_be_single_use": "The bootstrap token is not marked single-use; mint a new token "
    "with `amesh provision`.",
    "token_not_yet_valid": "The bootstrap token is not valid yet; check this machine's clock.",
    "token_expired": "The bootstrap token has expired; mint a new one with `amesh provision`.",
    "token_lifetime_too_long": "The bootstrap token is valid for more than 24 hours; mint a new "
    "one with a --ttl of at most 24h.",
    "invalid_signature": "The bootstrap token's signature does not match the controller's key; "
    "mint a new token with `amesh provision`.",
    "invalid_ttl": "Invalid TTL format; use e.g. 30m, 1h, 24h.",
    "ttl_too_long": "The TTL cannot exceed 24 hours; use e.g. 30m, 1h, 24h.",
}
ERROR_CODES = frozenset(_MESSAGES)


class BootstrapTokenError(ValueError):
    """A token (or TTL) was refused; ``code`` is the stable machine-readable reason."""

    def __init__(self, code: str) -> None:
        super().__init__(_MESSAGES.get(code, "The bootstrap token was refused."))
        self.code = code


def _fail(code: str) -> NoReturn:
    raise BootstrapTokenError(code)


@dataclass(frozen=True, slots=True)
class BootstrapToken:
    """A structurally decoded token. Claims are as found; nothing here is verified yet."""

    token: str
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature_segment: str

    @property
    def jti(self) -> str | None:
        return _string_claim(self.payload, "jti")

    @property
    def issuer(self) -> str | None:
        return _string_claim(self.payload, "iss")

    @property
    def name(self) -> str | None:
        return _string_claim(self.payload, "name")

    @property
    def relay(self) -> str | None:
        return _string_claim(self.payload, "relay")

    def issuer_public_key(self) -> bytes | None:
        """``pub`` decoded, or None when absent or not a valid compressed P-256 key."""
        text = _string_claim(self.payload, "pub")
        if text is None:
            return None
        try:
            return public_key_from_b64(text)
        except InvalidKeyError:
            return None


def _string_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def _is_number(value: object) -> TypeGuard[int | float]:
    # JSON booleans are Python ints; JavaScript's ``typeof`` says "boolean", not "number".
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lifetime_within_cap(issued_at: float, expires_at: float) -> bool:
    try:
        lifetime = expires_at - issued_at
    except OverflowError:  # a huge JSON integer minus a float
        return False
    # "<=" rather than a negated ">" so that a NaN or infinite lifetime fails.
    return bool(lifetime <= MAX_TTL_SECONDS)


def _reject_constant(name: str) -> NoReturn:
    # NaN/Infinity literals are not JSON; JavaScript's JSON.parse refuses them too.
    raise ValueError(f"invalid JSON constant {name}")


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(b64decode(segment).decode("utf-8"), parse_constant=_reject_constant)
    except (B64Error, ValueError, RecursionError):
        _fail("invalid_token_format")
    if not isinstance(value, dict):
        _fail("invalid_token_format")
    return value


def decode_token(token: object) -> BootstrapToken:
    """Checks 1-3 of §4.3: prefix, three segments, JSON objects. Raises ``invalid_token_format``."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        _fail("invalid_token_format")
    if not token.startswith(TOKEN_PREFIX):
        _fail("invalid_token_format")
    parts = token[len(TOKEN_PREFIX) :].split(".")
    if len(parts) != 3:
        _fail("invalid_token_format")
    header_segment, payload_segment, signature_segment = parts
    header = _json_segment(header_segment)
    payload = _json_segment(payload_segment)
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    return BootstrapToken(token, header, payload, signing_input, signature_segment)


def validate_token(token: object, controller_public_key: bytes, *, now: float) -> BootstrapToken:
    """Full validation against the caller-supplied issuer key, in the reference's order.

    Raises :class:`BootstrapTokenError` (only) with the first failing check's code.
    """
    decoded = decode_token(token)
    _check_fixed_claims(decoded.header, decoded.payload)
    _check_lifetime(decoded.payload, now)
    try:
        signature = b64decode(decoded.signature_segment)
    except B64Error:
        _fail("invalid_signature")
    if not verify(controller_public_key, signature, decoded.signing_input):
        _fail("invalid_signature")
    return decoded


# Header members with one allowed value, and the code of a token that has another.
_HEADER_CHECKS = (
    ("typ", "invalid_token_type"),
    ("ver", "unsupported_token_version"),
    ("alg", "unsupported_token_alg"),
)


def _check_fixed_claims(header: dict[str, Any], payload: dict[str, Any]) -> None:
    for member, code in _HEADER_CHECKS:
        if header.get(member) != _HEADER[member]:
            _fail(code)
    if payload.get("scope") != _SCOPE:
        _fail("unsupported_token_scope")
    if payload.get("single_use") is not True:
        _fail("token_must_be_single_use")


def _check_lifetime(payload: dict[str, Any], now: float) -> None:
    issued_at, expires_at = payload.get("iat"), payload.get("exp")
    if not _is_number(issued_at) or issued_at > now + CLOCK_SKEW_SECONDS:
        _fail("token_not_yet_valid")
    if not _is_number(expires_at) or expires_at <= now:
        _fail("token_expired")
    if not _lifetime_within_cap(issued_at, expires_at):
        _fail("token_lifetime_too_long")


def new_jti(random_bytes: bytes | None = None) -> str:
    """``"bt_"`` + 32 lowercase hex digits of 16 random bytes (injectable for vectors)."""
    if random_bytes is None:
        random_bytes = secrets.token_bytes(16)
    if len(random_bytes) != 16:
        raise ValueError("a jti takes exactly 16 random bytes")
    return "bt_" + random_bytes.hex()


def parse_ttl(text: str) -> int:
    """``<N>m`` or ``<N>h`` to seconds, at most 24 h (the reference's ``--ttl`` rules)."""
    match = _TTL_PATTERN.fullmatch(text)
    if match is None:
        _fail("invalid_ttl")
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 3600)
    if seconds > MAX_TTL_SECONDS:
        _fail("ttl_too_long")
    return seconds


def _compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mint_token(
    signer: Signer,
    *,
    name: str,
    relay: str,
    ttl_seconds: int,
    now: float,
    jti: str | None = None,
) -> str:
    """A token byte-identical to the reference's ``amesh provision`` for the same inputs."""
    if not 0 <= ttl_seconds <= MAX_TTL_SECONDS:
        _fail("ttl_too_long")
    issued_at = int(now)
    payload = {
        "iss": device_id(signer.public_key),
        "pub": b64encode(signer.public_key),
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
        "jti": jti if jti is not None else new_jti(),
        "name": name,
        "relay": relay,
        "scope": _SCOPE,
        "single_use": True,
    }
    signing_input = (
        b64url_encode(_compact_json(_HEADER)) + "." + b64url_encode(_compact_json(payload))
    )
    signature = signer.sign(signing_input.encode("ascii"))
    return TOKEN_PREFIX + signing_input + "." + b64url_encode(signature)


def ack_message(target_public_key_b64: str, jti: str) -> bytes:
    """``"amesh-bootstrap-ack-v1\\n" || b64(target pub) || "\\n" || jti`` ([wire], §4.6)."""
    return f"{ACK_PREFIX}\n{target_public_key_b64}\n{jti}".encode()


def sign_ack(signer: Signer, target_public_key_b64: str, jti: str) -> str:
    """The base64 ``controllerSig`` for an ack."""
    return b64encode(signer.sign(ack_message(target_public_key_b64, jti)))


def verify_ack(
    controller_public_key: bytes, controller_sig: object, target_public_key_b64: str, jti: str
) -> bool:
    """Check a ``controllerSig`` (any JSON value) against the token's issuer key; never raises."""
    if not isinstance(controller_sig, str):
        return False
    try:
        signature = b64decode(controller_sig)
    except B64Error:
        return False
    return verify(controller_public_key, signature, ack_message(target_public_key_b64, jti))
