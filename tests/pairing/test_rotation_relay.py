"""A hostile relay cannot forge a rotation or its confirmation (``rotate --notify``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from authmesh.core._allowlist import AllowList, Device
from authmesh.core._b64 import b64url_encode
from authmesh.core._keys import PrivateKey
from authmesh.core._rotation import (
    ACK_TYPE,
    RotationStatement,
    ack_message,
    apply_chain,
    chain_document,
    create_statement,
)
from authmesh.pairing._rotation import NotifyError, offer_rotation, receive_rotation

STEP = 15.0
Script = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def hostile_relay(script: Script) -> AsyncIterator[str]:
    """Answers listen/connect as a relay would, then runs ``script`` on the socket."""

    async def handler(socket: ServerConnection) -> None:
        hello = json.loads(await asyncio.wait_for(socket.recv(), STEP))
        if hello["type"] == "listen":
            await socket.send(json.dumps({"type": "ack", "message": "session_open"}))
        await socket.send(json.dumps({"type": "peer_found", "protocol": 2}))
        await script(socket)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


async def _send_data(socket: ServerConnection, payload: dict[str, Any]) -> None:
    await socket.send(json.dumps({"type": "data", "payload": json.dumps(payload)}))


OLD, NEW, THIEF = PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate()
PEER = PrivateKey.generate()
NOW = 1_800_000_000


def _entry(key: PrivateKey, role: str) -> Device:
    return Device.new(
        device_id=key.device_id,
        public_key=key.public_key_b64,
        friendly_name="peer",
        role=role,
        added_at="2026-01-01T00:00:00.000Z",
    )


def test_a_forged_chain_from_the_relay_changes_nothing_and_is_not_confirmed() -> None:
    trusted = AllowList.empty("x").with_device(_entry(OLD, "target"), "x")
    # The relay does not hold OLD: it signs the "old key" part with its own key.
    forged = create_statement(THIEF, PrivateKey.generate(), 1, NOW)
    forged = RotationStatement(
        OLD.device_id,
        OLD.public_key_b64,
        NEW.public_key_b64,
        1,
        NOW,
        forged.old_sig,
        create_statement(OLD, NEW, 1, NOW).new_sig,
    )
    answers: list[str] = []

    async def script(socket: ServerConnection) -> None:
        await _send_data(socket, chain_document([forged]))
        answers.extend([str(message) async for message in socket])

    def apply(chain: tuple[RotationStatement, ...]) -> Device:
        return apply_chain(trusted, chain, NOW)[1]

    async def run() -> None:
        async with hostile_relay(script) as url:
            await receive_rotation("123456", PEER, apply, relay_url=url)

    with pytest.raises(ValueError, match="signatures do not verify"):
        asyncio.run(run())
    assert not any(ACK_TYPE in answer for answer in answers)


def _ack(signer: PrivateKey, statement: RotationStatement, claimed: PrivateKey) -> dict[str, Any]:
    message = ack_message(statement.new_key, statement.seq, claimed.public_key_b64)
    return {
        "type": ACK_TYPE,
        "publicKey": claimed.public_key_b64,
        "sig": b64url_encode(signer.sign(message)),
    }


@pytest.mark.parametrize(
    ("signer", "claimed", "problem"),
    [(THIEF, THIEF, "does not trust"), (THIEF, PEER, "not validly signed")],
)
def test_a_forged_confirmation_is_refused(
    signer: PrivateKey, claimed: PrivateKey, problem: str
) -> None:
    statement = create_statement(OLD, NEW, 1, NOW)
    known = {PEER.public_key_b64: _entry(PEER, "controller")}

    async def script(socket: ServerConnection) -> None:
        await asyncio.wait_for(socket.recv(), STEP)  # the chain
        await _send_data(socket, _ack(signer, statement, claimed))
        await asyncio.wait_for(socket.wait_closed(), STEP)

    async def run() -> Device:
        async with hostile_relay(script) as url:
            return await offer_rotation((statement,), known.get, relay_url=url)

    with pytest.raises(NotifyError, match=problem):
        asyncio.run(run())


def test_a_genuine_confirmation_is_accepted() -> None:
    statement = create_statement(OLD, NEW, 1, NOW)
    known = {PEER.public_key_b64: _entry(PEER, "controller")}

    async def script(socket: ServerConnection) -> None:
        await asyncio.wait_for(socket.recv(), STEP)
        await _send_data(socket, _ack(PEER, statement, PEER))
        await asyncio.wait_for(socket.wait_closed(), STEP)

    async def run() -> Device:
        async with hostile_relay(script) as url:
            return await offer_rotation((statement,), known.get, relay_url=url)

    assert asyncio.run(run()).public_key == PEER.public_key_b64
