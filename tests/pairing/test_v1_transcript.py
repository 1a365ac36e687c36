"""Legacy pairing state machines replay the reference's recorded handshake byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authmesh.core._keys import PrivateKey
from authmesh.pairing import PairingError
from authmesh.pairing._relay_client import encode_frame
from authmesh.pairing._v1 import V1Controller, V1Target
from tests.support.vectorfiles import section

TRANSCRIPT = section("pairing.json", "handshake_transcript")
NOW = section("pairing.json", "meta.conventions.fixed_now.unix")


def _side(name: str) -> tuple[PrivateKey, PrivateKey, str, bytes]:
    inputs = TRANSCRIPT["inputs"][name]
    return (
        PrivateKey.from_scalar(bytes.fromhex(inputs["private_key_hex"])),
        PrivateKey.from_scalar(bytes.fromhex(inputs["ephemeral_private_key_hex"])),
        inputs["friendlyName"],
        bytes.fromhex(inputs["aead_nonce_hex"]),
    )


def _frames(side: str, direction: str) -> list[dict[str, Any]]:
    return [f for f in TRANSCRIPT["frames"] if f["side"] == side and f["dir"] == direction]


def test_target_sends_exactly_the_recorded_frames() -> None:
    key, ephemeral, name, nonce = _side("target")
    target = V1Target(key, name, clock=lambda: NOW, ephemeral=ephemeral, nonces=iter([nonce]))
    received = [f["text"] for f in _frames("target", "recv")]
    sent = [encode_frame(target.listen_frame(TRANSCRIPT["inputs"]["otc"]))]
    assert received[0] == encode_frame({"type": "ack", "message": "session_open"})
    assert received[1] == encode_frame({"type": "peer_found"})
    sent.append(encode_frame(target.ephemeral_frame()))
    target.on_controller_ephemeral(json.loads(received[2]))
    peer, frames = target.on_controller_identity(json.loads(received[3]))
    sent.extend(encode_frame(frame) for frame in frames)
    assert sent == [f["text"] for f in _frames("target", "send")]
    assert target.sas == TRANSCRIPT["results"]["target"]["sas"]
    assert peer.public_key_b64 == TRANSCRIPT["results"]["target"]["peerPublicKey_b64"]
    assert peer.friendly_name == TRANSCRIPT["results"]["target"]["peerFriendlyName"]


def test_controller_sends_exactly_the_recorded_frames() -> None:
    key, ephemeral, name, nonce = _side("controller")
    controller = V1Controller(
        key, name, clock=lambda: NOW, ephemeral=ephemeral, nonces=iter([nonce])
    )
    received = [json.loads(f["text"]) for f in _frames("controller", "recv")]
    sent = [encode_frame(controller.connect_frame(TRANSCRIPT["inputs"]["otc"]))]
    assert received[0] == {"type": "peer_found"}
    sent.extend(encode_frame(frame) for frame in controller.on_target_ephemeral(received[1]))
    peer, frames = controller.on_target_identity(received[2])
    sent.extend(encode_frame(frame) for frame in frames)
    assert sent == [f["text"] for f in _frames("controller", "send")]
    assert controller.sas == TRANSCRIPT["results"]["controller"]["sas"]
    assert peer.public_key_b64 == TRANSCRIPT["results"]["controller"]["peerPublicKey_b64"]


def test_reflected_identity_is_refused() -> None:
    """W4: the relay bounces the controller's own identity back; v1 cannot tell by key
    material (one key both ways), so we refuse our own public key."""
    key, ephemeral, name, nonce = _side("controller")
    controller = V1Controller(
        key, name, clock=lambda: NOW, ephemeral=ephemeral, nonces=iter([nonce])
    )
    frames = controller.on_target_ephemeral(json.loads(_frames("controller", "recv")[1]["text"]))
    with pytest.raises(PairingError) as raised:
        controller.on_target_identity(frames[1])
    assert raised.value.code == "own_key"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "error", "code": "peer_disconnected"}, "peer_disconnected"),
        ({"type": "done"}, "peer_disconnected"),
        ({"type": "data"}, "protocol_violation"),
        ({"type": "data", "payload": 5}, "protocol_violation"),
        ({"type": "data", "payload": "not base64!"}, "bad_peer_key"),
        ({"type": "data", "payload": "BGFhYQ=="}, "bad_peer_key"),
    ],
)
def test_unexpected_frames_are_clear_errors(frame: dict[str, Any], code: str) -> None:
    """§3.3 [rec]: the reference reads ``payload`` of whatever arrives; we check first."""
    key, ephemeral, name, _ = _side("target")
    target = V1Target(key, name, clock=lambda: NOW, ephemeral=ephemeral)
    with pytest.raises(PairingError) as raised:
        target.on_controller_ephemeral(frame)
    assert raised.value.code == code
