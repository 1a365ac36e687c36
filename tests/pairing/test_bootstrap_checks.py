"""The offline checks of both bootstrap sides (no relay needed)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from authmesh.core._b64 import b64encode, b64url_encode
from authmesh.core._keys import PrivateKey
from authmesh.pairing import PairingError, bootstrap, check_token, issue_token
from authmesh.pairing._bootstrap import _check_init, init_statement

NOW = 1_775_476_800
CONTROLLER = PrivateKey.generate()


def _token(**changes: Any) -> str:
    """A correctly signed token whose payload has ``changes`` applied (None deletes)."""
    payload: dict[str, Any] = {
        "iss": CONTROLLER.device_id,
        "pub": CONTROLLER.public_key_b64,
        "iat": NOW,
        "exp": NOW + 600,
        "jti": "bt_" + "ab" * 16,
        "name": "edge",
        "relay": "ws://127.0.0.1:9/ws",
        "scope": "peer:add",
        "single_use": True,
    }
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    header = {"typ": "amesh-bootstrap", "ver": "1", "alg": "ES256"}
    signing_input = ".".join(
        b64url_encode(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, payload)
    )
    signature = b64url_encode(CONTROLLER.sign(signing_input.encode()))
    return f"amesh-bt-v1.{signing_input}.{signature}"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"pub": None}, "token_missing_controller_pubkey"),
        ({"iss": "am_AAAAAAAAAAAAAAAA"}, "issuer_mismatch"),
        ({"name": None}, "invalid_token_format"),
        ({"name": 7}, "invalid_token_format"),
        ({"name": "x" * 257}, "invalid_token_format"),
        ({"relay": "https://relay.example/ws"}, "invalid_token_format"),
        ({"jti": ""}, "invalid_token_format"),
        ({"jti": "bt_" + "a" * 200}, "invalid_token_format"),
        ({"exp": NOW + 86_401}, "token_lifetime_too_long"),
    ],
)
def test_target_refuses_unusable_tokens(changes: dict[str, Any], code: str) -> None:
    with pytest.raises(PairingError) as raised:
        check_token(_token(**changes), now=NOW)
    assert raised.value.code == code
    assert str(raised.value).endswith(".")


def test_good_token_passes() -> None:
    assert check_token(_token(), now=NOW).name == "edge"


async def test_target_refuses_a_token_from_itself() -> None:
    with pytest.raises(PairingError) as raised:
        await bootstrap(_token(), CONTROLLER, clock=lambda: NOW)
    assert raised.value.code == "own_key"


def _init(issued_token: str, target: PrivateKey, **changes: Any) -> dict[str, Any]:
    jti = "bt_" + "ab" * 16
    target_b64 = target.public_key_b64
    message = {
        "type": "bootstrap_init",
        "jti": jti,
        "targetPubKey": target_b64,
        "targetSig": b64encode(target.sign(init_statement(jti, target_b64, issued_token))),
        "protocol": 2,
    }
    message.update(changes)
    return {k: v for k, v in message.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "legacy", "code"),
    [
        ({"jti": "bt_" + "cd" * 16}, False, "wrong_token"),
        ({"targetPubKey": "AAAA"}, False, "bad_peer_key"),
        ({"targetPubKey": CONTROLLER.public_key_b64}, False, "own_key"),
        ({"targetSig": b64encode(bytes(64))}, False, "invalid_target_signature"),
        ({"targetSig": "%%%"}, False, "invalid_target_signature"),
        ({"targetSig": None, "protocol": None}, False, "target_proof_required"),
        ({"targetSig": None, "protocol": None, "token": "other"}, True, "wrong_token"),
    ],
)
def test_controller_checks_each_init(changes: dict[str, Any], legacy: bool, code: str) -> None:
    issued = issue_token(CONTROLLER, name="edge", relay_url="ws://127.0.0.1:9/ws", now=NOW)
    issued = dataclasses.replace(issued, jti="bt_" + "ab" * 16)
    target = PrivateKey.generate()
    with pytest.raises(PairingError) as raised:
        _check_init(CONTROLLER, issued, _init(issued.token, target, **changes), legacy, NOW)
    assert raised.value.code == code


def test_controller_accepts_a_proven_init_and_refuses_after_expiry() -> None:
    issued = issue_token(CONTROLLER, name="edge", relay_url="ws://127.0.0.1:9/ws", now=NOW)
    target = PrivateKey.generate()
    message = _init(issued.token, target, jti=issued.jti)
    message["targetSig"] = b64encode(
        target.sign(init_statement(issued.jti, target.public_key_b64, issued.token))
    )
    result = _check_init(CONTROLLER, issued, message, False, NOW)
    assert result.peer_public_key == target.public_key and result.protocol == 2
    with pytest.raises(PairingError) as raised:
        _check_init(CONTROLLER, issued, message, False, issued.expires_at)
    assert raised.value.code == "token_expired"
