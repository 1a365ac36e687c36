"""The protocol-2 agent challenge: domain-prefixed, bound to the device id (weakness S1)."""

from __future__ import annotations

import uuid

import pytest

from authmesh.core._b64 import b64decode
from authmesh.core._keys import PrivateKey, verify
from authmesh.core.shell._challenge import (
    V2_CHALLENGE_DOMAIN,
    ChallengeError,
    ChallengeScheme,
    challenge_message,
    sign_challenge,
    verify_challenge,
)


def test_v2_signs_the_domain_the_device_id_and_the_challenge() -> None:
    key = PrivateKey.generate()
    challenge = str(uuid.uuid4())
    signature = sign_challenge(key, challenge, ChallengeScheme.V2)
    expected = f"amesh-agent-challenge-v2\n{key.device_id}\n{challenge}".encode()
    assert V2_CHALLENGE_DOMAIN == "amesh-agent-challenge-v2"
    assert challenge_message(challenge, ChallengeScheme.V2, agent_device_id=key.device_id) == (
        expected
    )
    assert verify(key.public_key, b64decode(signature), expected)
    assert verify_challenge(
        key.public_key_b64, key.device_id, challenge, signature, ChallengeScheme.V2
    )


def test_v1_and_v2_signatures_do_not_verify_as_each_other() -> None:
    key = PrivateKey.generate()
    challenge = str(uuid.uuid4())
    v1 = sign_challenge(key, challenge, ChallengeScheme.V1)
    v2 = sign_challenge(key, challenge, ChallengeScheme.V2)
    assert not verify_challenge(
        key.public_key_b64, key.device_id, challenge, v1, ChallengeScheme.V2
    )
    assert not verify_challenge(
        key.public_key_b64, key.device_id, challenge, v2, ChallengeScheme.V1
    )


def test_v2_still_refuses_anything_but_a_uuid() -> None:
    with pytest.raises(ChallengeError):
        sign_challenge(PrivateKey.generate(), "AMv1\nGET\n/\n1\nn\nh", ChallengeScheme.V2)
