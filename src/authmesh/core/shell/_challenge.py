"""The agent's registration challenge: what it signs and how the relay checks it (spec shell §1.1).

Scheme :attr:`ChallengeScheme.V1` is the reference's: the agent signs the UTF-8 bytes of the
relay's challenge string as received (no prefix), raw ``r || s`` low-S, sent as base64url
without padding; the relay decodes the signature leniently (either alphabet, padding optional).

V1 makes the agent a signing oracle for the relay (weakness S1). Without changing the wire we
only sign challenges of the form every reference relay sends — a lowercase UUID v4 — which no
other amesh signed format can match. Scheme :attr:`ChallengeScheme.V2` (our protocol version 2,
negotiated by ``"protocol": 2`` on ``agent`` and ``agent_challenge``) signs
``"amesh-agent-challenge-v2\n" + deviceId + "\n" + challenge``, so the signature can only
ever be read as an agent registration of that device. Verification also requires the claimed
device id to be derived from the key, which the reference relay does not check (weakness S2).
"""

from __future__ import annotations

import re
from enum import Enum

from authmesh.core._b64 import B64Error, b64decode, b64url_encode
from authmesh.core._keys import InvalidKeyError, device_id, public_key_from_b64, verify
from authmesh.core._selfsig import Signer

__all__ = [
    "CHALLENGE_PATTERN",
    "V2_CHALLENGE_DOMAIN",
    "ChallengeError",
    "ChallengeScheme",
    "challenge_message",
    "sign_challenge",
    "verify_challenge",
]

# crypto.randomUUID(): 36 characters, lowercase, version 4, RFC 4122 variant.
CHALLENGE_PATTERN = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
)


V2_CHALLENGE_DOMAIN = "amesh-agent-challenge-v2"


class ChallengeError(ValueError):
    """A challenge the agent refuses to sign."""


class ChallengeScheme(Enum):
    """How a challenge string becomes the signed bytes."""

    V1 = "v1"
    """Reference wire format: the challenge's UTF-8 bytes, nothing else."""

    V2 = "v2"
    """Protocol 2: ``V2_CHALLENGE_DOMAIN "\n" deviceId "\n" challenge``, UTF-8."""


def challenge_message(
    challenge: str, scheme: ChallengeScheme = ChallengeScheme.V1, *, agent_device_id: str = ""
) -> bytes:
    """The bytes the agent signs for ``challenge`` (``agent_device_id`` is used by V2 only)."""
    if scheme is ChallengeScheme.V1:
        return challenge.encode("utf-8")
    return f"{V2_CHALLENGE_DOMAIN}\n{agent_device_id}\n{challenge}".encode()


def sign_challenge(
    signer: Signer, challenge: str, scheme: ChallengeScheme = ChallengeScheme.V1
) -> str:
    """The ``sig`` field answering ``challenge``: base64url without padding.

    Refuses anything but a lowercase UUID v4 so a relay cannot obtain signatures over
    other signed formats (request canonical strings, tokens, selfSigs; weakness S1).
    """
    if CHALLENGE_PATTERN.fullmatch(challenge) is None:
        raise ChallengeError(
            "The relay sent a registration challenge that is not a UUID; refusing to sign it. "
            "Check that the relay URL points to an amesh relay."
        )
    message = challenge_message(challenge, scheme, agent_device_id=device_id(signer.public_key))
    return b64url_encode(signer.sign(message))


def verify_challenge(
    public_key_b64: str,
    claimed_device_id: str,
    challenge: str,
    signature: str,
    scheme: ChallengeScheme = ChallengeScheme.V1,
) -> bool:
    """True when ``signature`` answers ``challenge`` for this key and device id; never raises.

    The signature is decoded leniently as the reference relay does (either base64 alphabet,
    padding optional) and must be low-S; ``claimed_device_id`` must be derived from the key.
    """
    try:
        public_key = public_key_from_b64(public_key_b64)
        raw_signature = b64decode(signature)
        message = challenge_message(challenge, scheme, agent_device_id=claimed_device_id)
    except (InvalidKeyError, B64Error, UnicodeEncodeError):
        return False
    if device_id(public_key) != claimed_device_id:
        return False
    return verify(public_key, raw_signature, message)
