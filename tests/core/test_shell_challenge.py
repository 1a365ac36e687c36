"""Agent challenge and relay wire helpers beyond the vectors (weaknesses S1 and S2)."""

from __future__ import annotations

import json
import uuid

import pytest

from authmesh.core._b64 import b64encode
from authmesh.core._keys import PrivateKey
from authmesh.core.shell._challenge import (
    ChallengeError,
    challenge_message,
    sign_challenge,
    verify_challenge,
)
from authmesh.core.shell._wire import (
    WireError,
    agent_message,
    challenge_response_message,
    data_message,
    data_payload,
)


def test_sign_and_verify_a_fresh_uuid() -> None:
    key = PrivateKey.generate()
    challenge = str(uuid.uuid4())
    signature = sign_challenge(key, challenge)
    assert len(signature) == 86 and "=" not in signature
    assert verify_challenge(key.public_key_b64, key.device_id, challenge, signature)
    assert not verify_challenge(key.public_key_b64, key.device_id, str(uuid.uuid4()), signature)


@pytest.mark.parametrize(
    "challenge",
    [
        "AMv1\nPOST\n/api/pay\n1775390400\nnonce\n" + "0" * 64,  # a request canonical string
        "eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJ4In0",  # a token header.payload
        str(uuid.uuid4()).upper(),
        str(uuid.uuid1()),  # not version 4
        "6f1c2b8e-3d4a-4f5b-9c6d-7e8f9a0b1c2d\n",
        "",
    ],
)
def test_agent_signs_only_uuid_v4_challenges(challenge: str) -> None:
    # S1: the v1 challenge is signed raw, so a relay could ask for any message; we refuse
    # everything but the UUID form every reference relay sends.
    with pytest.raises(ChallengeError, match="not a UUID"):
        sign_challenge(PrivateKey.generate(), challenge)


def test_verify_requires_device_id_bound_to_key() -> None:
    # S2: the reference relay lets anyone register any deviceId with their own key.
    victim, squatter = PrivateKey.generate(), PrivateKey.generate()
    challenge = str(uuid.uuid4())
    signature = sign_challenge(squatter, challenge)
    assert verify_challenge(squatter.public_key_b64, squatter.device_id, challenge, signature)
    assert not verify_challenge(squatter.public_key_b64, victim.device_id, challenge, signature)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        ("not a key", None),
        (b64encode(bytes(33)), None),
        (None, "!!!"),
        (None, b64encode(bytes(64))),
        (None, b64encode(bytes(63))),
    ],
)
def test_verify_never_raises(public_key: str | None, signature: str | None) -> None:
    key = PrivateKey.generate()
    challenge = str(uuid.uuid4())
    assert not verify_challenge(
        public_key or key.public_key_b64,
        key.device_id,
        challenge,
        signature or sign_challenge(key, challenge),
    )
    assert not verify_challenge(key.public_key_b64, key.device_id, "\ud800", "AA")


def test_challenge_message_is_the_raw_utf8() -> None:
    assert challenge_message("00000000-0000-4000-8000-000000000000") == (
        b"00000000-0000-4000-8000-000000000000"
    )


def test_wire_messages() -> None:
    assert data_message(b"\x00\xff") == '{"type":"data","payload":"AP8="}'
    assert agent_message("am_x", "K+/=") == '{"type":"agent","deviceId":"am_x","publicKey":"K+/="}'
    assert json.loads(challenge_response_message("sig")) == {
        "type": "agent_challenge_response",
        "sig": "sig",
    }


@pytest.mark.parametrize("payload", [None, 3, ["AA=="], "A", "AP8=!", "x" * 70_000])
def test_data_payload_rejects_non_base64(payload: object) -> None:
    with pytest.raises(WireError):
        data_payload(payload)


def test_data_payload_accepts_either_alphabet() -> None:
    assert data_payload("AP8=") == data_payload("AP8") == b"\x00\xff"
    assert data_payload("_-8") == b"\xff\xef"
