"""What a finished pairing yields, and the checks every received identity passes."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal

from authmesh.core import InvalidKeyError, Signer, device_id, public_key_from_b64
from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._keys import verify
from authmesh.core._selfsig import iso_timestamp
from authmesh.pairing._errors import MAX_FRIENDLY_NAME_CHARS, PairingError
from authmesh.pairing._relay_client import relay_error

__all__ = [
    "MAX_FRIENDLY_NAME_CHARS",
    "PairingResult",
    "PeerIdentity",
    "Role",
    "check_own_name",
    "data_payload",
    "friendly_name",
    "identity_statement",
    "length_prefixed",
    "peer_public_key",
    "signed_identity",
    "verified_identity",
]

Role = Literal["controller", "target"]


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The other machine as it proved itself during the handshake."""

    public_key: bytes
    friendly_name: str
    timestamp: str

    @property
    def public_key_b64(self) -> str:
        return b64encode(self.public_key)

    @property
    def device_id(self) -> str:
        return device_id(self.public_key)


@dataclass(frozen=True, slots=True)
class PairingResult:
    """A completed pairing; the caller writes the allow-list entry from it.

    ``peer_role`` is the role to record for the peer (``"controller"`` on the target,
    ``"target"`` on the controller). ``protocol`` is what the peer speaks (1 or 2), for the
    allow-list entry's protocol field; ``pairing`` is the pairing version that ran (1, 2 or
    3: a v3 peer is an authmesh peer, so it speaks protocol 2). ``confirmed`` says whether
    the target accepted (for v1/v2, its operator's verdict on the verification code; a
    legacy controller can never know, pairing.md W7). ``sas`` is empty for v3.
    """

    peer: PeerIdentity
    peer_role: Role
    protocol: int
    sas: str
    confirmed: bool
    pairing: int


def data_payload(message: dict[str, Any]) -> str:
    """The string payload of a relay ``data`` frame, or the matching error (pairing.md §3.3)."""
    kind = message.get("type")
    if kind == "error":
        raise relay_error(message)
    if kind == "done":
        raise PairingError("peer_disconnected")
    payload = message.get("payload")
    if kind != "data" or not isinstance(payload, str):
        raise PairingError("protocol_violation")
    return payload


def peer_public_key(text: object, own_public_key: bytes) -> bytes:
    """A peer's long-term or ephemeral key: 33-byte compressed, valid, and not our own (W4)."""
    if not isinstance(text, str):
        raise PairingError("bad_peer_key")
    try:
        public_key = public_key_from_b64(text)
    except InvalidKeyError as exc:
        raise PairingError("bad_peer_key") from exc
    if public_key == own_public_key:
        raise PairingError("own_key")
    return public_key


def friendly_name(value: object) -> str:
    """A peer's name; one over the limit is named as such, not as a protocol error."""
    if not isinstance(value, str):
        raise PairingError("protocol_violation")
    if len(value) > MAX_FRIENDLY_NAME_CHARS:
        raise PairingError("peer_name_too_long")
    if not value.isascii():
        try:  # JSON may carry a lone surrogate, which no statement can sign
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PairingError("protocol_violation") from None
    return value


def check_own_name(name: str) -> None:
    """Refuse, before contacting the relay, a name the peer would refuse (issue 13)."""
    if len(name) > MAX_FRIENDLY_NAME_CHARS:
        raise PairingError("name_too_long")


def length_prefixed(data: bytes) -> bytes:
    """A 4-byte length then the bytes: signed statements stay unambiguous whatever the
    contents (W4)."""
    return struct.pack(">I", len(data)) + data


def identity_statement(
    domain: bytes, role: str, transcript: bytes, public_key: bytes, *, name: str, timestamp: str
) -> bytes:
    """What a v2/v3 identity signature covers: the protocol's domain, the signer's role, the
    transcript hash, its key, name and timestamp, each length-delimited."""
    return (
        domain
        + b"/identity\x00"
        + length_prefixed(role.encode("ascii"))
        + length_prefixed(transcript)
        + length_prefixed(public_key)
        + length_prefixed(name.encode("utf-8"))
        + length_prefixed(timestamp.encode("utf-8"))
    )


def signed_identity(
    signer: Signer, domain: bytes, role: str, transcript: bytes, *, name: str, now: float
) -> dict[str, str]:
    """The identity fields a v2/v3 side seals: its key, name, timestamp (``now``) and the
    signature of :func:`identity_statement` for its role and the transcript."""
    timestamp = iso_timestamp(now)
    public_key = signer.public_key
    statement = identity_statement(
        domain, role, transcript, public_key, name=name, timestamp=timestamp
    )
    return {
        "publicKey": b64encode(public_key),
        "friendlyName": name,
        "timestamp": timestamp,
        "sig": b64encode(signer.sign(statement)),
    }


def verified_identity(
    fields: dict[str, Any], domain: bytes, role: str, transcript: bytes, own_public_key: bytes
) -> PeerIdentity:
    """The peer of ``role`` from its opened identity fields, once its signature over the
    transcript verifies; ``bad_peer_signature`` / ``protocol_violation`` otherwise."""
    public_key = peer_public_key(fields.get("publicKey"), own_public_key)
    name = friendly_name(fields.get("friendlyName"))
    timestamp, signature = fields.get("timestamp"), fields.get("sig")
    if not isinstance(timestamp, str) or len(timestamp) > 64 or not isinstance(signature, str):
        raise PairingError("protocol_violation")
    statement = identity_statement(
        domain, role, transcript, public_key, name=name, timestamp=timestamp
    )
    try:
        valid = verify(public_key, b64decode(signature), statement)
    except B64Error:
        valid = False
    if not valid:
        raise PairingError("bad_peer_signature")
    return PeerIdentity(public_key, name, timestamp)
