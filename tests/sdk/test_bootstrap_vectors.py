"""pairing.json ``bootstrap_sdk_ack_cases``: the SDK target against the recorded controller.

Each case replays the scripted relay+controller of the reference run (a websockets
server on 127.0.0.1) to the target step that ``bootstrap_if_needed`` runs —
``authmesh.pairing.bootstrap`` with ``legacy=True``, which sends the reference SDK's
``bootstrap_init`` — with the vectors' fixed target key and clock. Our init frame
must equal the reference's byte for byte, and the outcome must match, except where
we deliberately differ:

* the token is checked before any I/O (pairing.md W3), so a corrupted signature or a
  missing ``pub`` fails before connecting, with the token's own error code;
* a missing ``controllerSig`` is an ``invalid_controller_signature`` error, not a raw
  ``TypeError``;
* a relay ``error`` answer ends the call with a clear error instead of hanging (W8);
* an unknown reject reason is reported as ``bootstrap_rejected`` (not echoed);
* a token without the ``amesh-bt-v1.`` prefix is refused, as the reference CLI does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from authmesh.core._keys import PrivateKey
from authmesh.pairing import PairingError, bootstrap
from tests.conformance.ledger import record
from tests.support.vectorfiles import section

CASES = section("pairing.json", "bootstrap_sdk_ack_cases")
TARGET = PrivateKey.from_scalar(bytes.fromhex(CASES["sdk_target_key"]["private_key_hex"]))
NOW = 1775476800 + 1  # the runs' clock: 2026-04-06T12:00:00Z, one second into the token

OURS: dict[str, tuple[str, str]] = {
    "rejected: denied_by_operator": (
        "rejected: bootstrap_rejected",
        "reject reasons we do not know are reported as bootstrap_rejected, not echoed",
    ),
    "rejected: exception:TypeError": (
        "rejected: invalid_controller_signature",
        "missing controllerSig is a signature failure, not a crash",
    ),
    "rejected: invalid_token_signature": (
        "offline: invalid_signature",
        "W3: the token signature is checked before connecting",
    ),
    "rejected: token_missing_controller_pubkey": (
        "offline: token_missing_controller_pubkey",
        "W3: a token without pub is refused before connecting",
    ),
}


class ScriptedPeer:
    """Plays the recorded relay+controller frames and keeps what the target sent."""

    def __init__(self, frames: list[dict[str, str]]) -> None:
        self.frames = frames
        self.received: list[str] = []
        self.connections = 0

    async def handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        for frame in self.frames:
            if frame["dir"] == "recv":
                self.received.append(str(await connection.recv()))
            else:
                await connection.send(frame["text"])
        await connection.wait_closed()


@pytest.fixture
async def peer_factory() -> AsyncIterator[Any]:
    servers = []

    async def start(frames: list[dict[str, str]]) -> tuple[ScriptedPeer, str]:
        peer = ScriptedPeer(frames)
        server = await serve(peer.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return peer, f"ws://127.0.0.1:{port}/ws"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("index", "case"),
    list(enumerate(CASES["cases"])),
    ids=[c["label"][:50] for c in CASES["cases"]],
)
async def test_sdk_ack_case(index: int, case: dict[str, Any], peer_factory: Any) -> None:
    assert TARGET.public_key_b64 == CASES["sdk_target_key"]["public_key_b64"]
    init = json.loads(case["sdk_frames"][0]["text"])
    peer, url = await peer_factory(case["scripted_peer_frames"])
    expected = OURS.get(case["outcome"], (case["outcome"], ""))[0]
    if case["label"].startswith("token without the amesh-bt-v1. prefix"):
        # Ours requires the prefix, as the reference CLI does (pairing.md §4.3/§4.4).
        expected = "offline: invalid_token_format"
    try:
        result = await bootstrap(
            init["token"], TARGET, relay_url=url, legacy=True, timeout=5, clock=lambda: NOW
        )
        outcome = "resolved"
    except PairingError as error:
        outcome = f"{'offline' if peer.connections == 0 else 'rejected'}: {error.code}"
        assert str(error) and "\n" not in str(error)
    if case["outcome"].startswith("never settled"):
        assert outcome.startswith("rejected: ")  # W8: a clear error, never a hang
    else:
        assert outcome == expected
    if peer.connections:
        assert peer.received[0] == case["sdk_frames"][0]["text"]  # byte-identical init
    if outcome == "resolved":
        allow_list = json.loads(case["files"]["allow_list.json"])
        (controller,) = allow_list["devices"]
        assert result.peer_public_key_b64 == controller["publicKey"]
        assert result.peer_device_id == controller["deviceId"] and result.peer_role == "controller"
    record("pairing.json", "bootstrap_sdk_ack_cases.cases", index)
