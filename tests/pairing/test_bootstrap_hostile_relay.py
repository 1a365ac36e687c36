"""Bootstrap through a relay that swaps keys or forges answers (weaknesses W2, W3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from authmesh.core._b64 import b64encode
from authmesh.core._bootstrap_token import sign_ack
from authmesh.core._keys import PrivateKey
from authmesh.pairing import BootstrapResult, PairingError, bootstrap, issue_token
from authmesh.pairing._bootstrap import init_statement
from tests.support.pairing import start_watching

STEP = 10.0
Tamper = Callable[[dict[str, Any], PrivateKey], dict[str, Any]]


@asynccontextmanager
async def hostile_relay(
    *,
    tamper_init: Tamper | None = None,
    forge_ack: Callable[[dict[str, Any], PrivateKey], Awaitable[dict[str, Any]]] | None = None,
) -> AsyncIterator[str]:
    """A bootstrap relay that rewrites the target's init, or answers the target itself."""
    relay_key = PrivateKey.generate()
    watcher: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    target: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    closing = asyncio.Event()

    async def send(socket: ServerConnection, message: dict[str, Any]) -> None:
        await socket.send(json.dumps(message, separators=(",", ":")))

    async def handler(socket: ServerConnection) -> None:
        async for text in socket:
            message = json.loads(text)
            kind = message["type"]
            if kind == "bootstrap_watch":
                await send(socket, {"type": "bootstrap_watching", "jti": message["jti"]})
                if not watcher.done():
                    watcher.set_result(socket)
            elif kind == "bootstrap_init":
                target.set_result(socket)
                if forge_ack is not None:
                    await send(socket, await forge_ack(message, relay_key))
                    continue
                forwarded = tamper_init(message, relay_key) if tamper_init else message
                await send(await watcher, forwarded)
            elif kind in ("bootstrap_ack", "bootstrap_reject"):
                answer = {
                    k: message[k]
                    for k in ("type", "jti", "controllerPubKey", "controllerSig", "error")
                    if k in message
                }
                await send(await target, answer)
        await closing.wait()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        closing.set()


def _swap_v2_key(message: dict[str, Any], relay_key: PrivateKey) -> dict[str, Any]:
    """Substitute the relay's key; it must sign without knowing the token (never sent)."""
    relay_b64 = relay_key.public_key_b64
    guessed = init_statement(message["jti"], relay_b64, token="")
    return {**message, "targetPubKey": relay_b64, "targetSig": b64encode(relay_key.sign(guessed))}


def _swap_legacy_key(message: dict[str, Any], relay_key: PrivateKey) -> dict[str, Any]:
    return {**message, "targetPubKey": relay_key.public_key_b64}


async def _run(
    url: str, *, legacy: bool
) -> tuple[object, object, list[BootstrapResult], PrivateKey]:
    controller_key, target_key = PrivateKey.generate(), PrivateKey.generate()
    issued = issue_token(controller_key, name="edge", relay_url=url, ttl_seconds=600)
    watching, accepted = await start_watching(controller_key, issued, allow_legacy_target=legacy)
    try:
        target_side: object = await bootstrap(issued.token, target_key, legacy=legacy, timeout=STEP)
    except PairingError as error:
        target_side = error
    # The controller either finished or, when the relay answered the target itself, is still
    # watching: it is then simply stopped.
    done, _ = await asyncio.wait({watching}, timeout=0.5)
    controller_side: object = None
    if done:
        controller_side = watching.exception() or watching.result()
    else:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    return target_side, controller_side, accepted, target_key


async def test_v2_relay_cannot_substitute_the_target_key() -> None:
    """W3 fixed: targetSig binds the key to a token the relay never saw."""
    async with hostile_relay(tamper_init=_swap_v2_key) as url:
        target_side, controller_side, accepted, _ = await _run(url, legacy=False)
    assert isinstance(controller_side, PairingError)
    assert controller_side.code == "invalid_target_signature"
    assert accepted == []  # nothing recorded
    assert isinstance(target_side, PairingError)
    assert target_side.code == "invalid_target_signature"


async def test_legacy_target_key_can_be_substituted_w3() -> None:
    """Why legacy targets need allow_legacy_target=True: the reference init carries no proof,
    so a relay swaps in its own key and the controller records it (W3). The real target at
    least notices, because the ack is bound to its own key."""
    async with hostile_relay(tamper_init=_swap_legacy_key) as url:
        target_side, controller_side, accepted, target_key = await _run(url, legacy=True)
    assert isinstance(controller_side, BootstrapResult)
    assert controller_side.peer_public_key != target_key.public_key
    assert accepted == [controller_side]
    assert isinstance(target_side, PairingError)
    assert target_side.code == "invalid_controller_signature"


@pytest.mark.parametrize(
    ("name_controller", "code"),
    [(True, "controller_pubkey_mismatch"), (False, "invalid_controller_signature")],
)
async def test_forged_ack_is_refused(name_controller: bool, code: str) -> None:
    async def forge(init: dict[str, Any], relay_key: PrivateKey) -> dict[str, Any]:
        ack = {
            "type": "bootstrap_ack",
            "jti": init["jti"],
            "controllerSig": sign_ack(relay_key, init["targetPubKey"], init["jti"]),
        }
        if name_controller:
            ack["controllerPubKey"] = relay_key.public_key_b64
        return ack

    async with hostile_relay(forge_ack=forge) as url:
        target_side, controller_side, accepted, _ = await _run(url, legacy=False)
    assert isinstance(target_side, PairingError)
    assert target_side.code == code
    assert accepted == []
    assert controller_side is None  # never saw an init: the relay answered by itself


async def test_relay_error_frame_does_not_hang_the_target() -> None:
    """W8: the reference SDK hangs forever on an ``error`` frame; we fail at once."""

    async def error_frame(init: dict[str, Any], relay_key: PrivateKey) -> dict[str, Any]:
        return {"type": "error", "code": "missing_jti"}

    async with hostile_relay(forge_ack=error_frame) as url:
        target_side, _, _, _ = await _run(url, legacy=False)
    assert isinstance(target_side, PairingError)
    assert target_side.code == "relay_error"
