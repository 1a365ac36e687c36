"""Relay JSON messages of the shell feature, byte-exact with the reference (shell §1.1, §3, §4).

Handshake messages, identity envelopes and cipher messages all travel as
``{"type":"data","payload":"<standard base64>"}``; agent registration uses ``agent`` and
``agent_challenge_response``. Key order and compact separators match what the reference sends.
Outgoing messages are refused when they would exceed the reference relay's 65,536-byte cap.
"""

from __future__ import annotations

from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._jsoncanon import legacy_stringify

__all__ = [
    "MAX_RELAY_MESSAGE",
    "WireError",
    "agent_message",
    "challenge_response_message",
    "data_message",
    "data_payload",
    "done_message",
]

# The reference relay closes a sender with 1009 past this many bytes (spec shell §5.2).
MAX_RELAY_MESSAGE = 65_536


class WireError(ValueError):
    """A relay message cannot be built or its payload cannot be read."""


def _compact(message: dict[str, str]) -> str:
    text = legacy_stringify(dict(message))
    size = len(text.encode("utf-8"))
    if size > MAX_RELAY_MESSAGE:
        raise WireError(
            f"A relay message of {size} bytes exceeds the relay's {MAX_RELAY_MESSAGE}-byte "
            "limit; send smaller frames."
        )
    return text


def data_message(payload: bytes) -> str:
    """``{"type":"data","payload":b64(payload)}``."""
    return _compact({"type": "data", "payload": b64encode(payload)})


def data_payload(payload: object) -> bytes:
    """Decode the ``payload`` field of a received ``data`` message (either base64 alphabet)."""
    if not isinstance(payload, str):
        raise WireError("relay data message has no text payload")
    if len(payload) > MAX_RELAY_MESSAGE:
        raise WireError(f"relay data payload exceeds {MAX_RELAY_MESSAGE} characters")
    try:
        return b64decode(payload)
    except B64Error as exc:
        raise WireError("relay data payload is not valid base64") from exc


def agent_message(device_id: str, public_key_b64: str) -> str:
    """The agent's registration request ``{"type":"agent","deviceId":…,"publicKey":…}``."""
    return _compact({"type": "agent", "deviceId": device_id, "publicKey": public_key_b64})


def challenge_response_message(signature_b64url: str) -> str:
    """``{"type":"agent_challenge_response","sig":…}``."""
    return _compact({"type": "agent_challenge_response", "sig": signature_b64url})


def done_message() -> str:
    """``{"type":"done"}``: ends the relay session; reference parties ignore it."""
    return _compact({"type": "done"})
