"""Relays written for the pairing tests: a hostile one and a reference-like forwarder.

* :func:`hostile_relay` answers ``listen``/``connect`` like a relay, then hands both sockets
  to an ``attack`` coroutine that may do anything with them.
* :func:`forwarding_relay` behaves as the reference relay does (pairing.md §2.1): ``ack``,
  ``peer_found`` without any protocol field, ``data`` re-serialised with only ``type`` and
  ``payload``, ``done`` forwarded, ``peer_disconnected`` when a socket closes — and nothing
  else, so a protocol that runs over it runs over any relay that forwards ``data`` frames.
* :func:`pake_impostor` is the one attack on pairing v3 with any chance: the relay runs its
  own exchange with each side, guessing the password.
* :func:`in_thread` runs either on its own event loop for tests driving the CLI (pexpect).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from authmesh.core._keys import PrivateKey
from authmesh.pairing import PairingCode, PairingError
from authmesh.pairing._code import PASSWORD_DIGITS
from authmesh.pairing._v3 import V3Controller, V3Target

STEP = 15.0
Attack = Callable[[ServerConnection, ServerConnection, str], Awaitable[None]]


async def receive(socket: ServerConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), STEP))
    return message


async def send(socket: ServerConnection, message: dict[str, Any]) -> None:
    await socket.send(json.dumps(message, separators=(",", ":"), ensure_ascii=False))


@asynccontextmanager
async def hostile_relay(attack: Attack, *, protocol: int | None) -> AsyncIterator[str]:
    """Serve /ws; once both peers joined, hand their sockets to ``attack``."""
    target: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    controller: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()
    code: list[str] = []

    async def handler(socket: ServerConnection) -> None:
        first = await receive(socket)
        code.append(first["otc"])
        if first["type"] == "listen":
            await send(socket, {"type": "ack", "message": "session_open"})
            target.set_result(socket)
        else:
            controller.set_result(socket)
        await finished.wait()

    async def run() -> None:
        try:
            target_socket, controller_socket = await target, await controller
            found: dict[str, Any] = {"type": "peer_found"}
            if protocol is not None:
                found["protocol"] = protocol
            await send(target_socket, found)
            await send(controller_socket, found)
            await attack(target_socket, controller_socket, code[0])
        finally:
            finished.set()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        runner = asyncio.create_task(run())
        yield f"ws://127.0.0.1:{port}/ws"
        finished.set()
        runner.cancel()


def pake_impostor(results: dict[str, object]) -> Attack:
    """Run a pairing v3 exchange of the relay's own with each side, guessing the password
    (it knows only the routing code); ``results`` records what each of its legs learnt."""

    async def attack(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        guess = PairingCode(code, "0" * PASSWORD_DIGITS)
        as_controller = V3Controller(PrivateKey.generate(), "laptop", guess)
        as_target = V3Target(PrivateKey.generate(), "server", guess)
        await send(target, as_controller.start())
        await send(controller, as_target.start())
        for side, socket in ((as_controller, target), (as_target, controller)):
            for frame in side.receive(await receive(socket)):  # the honest PAKE message
                await send(socket, frame)
        for name, side, socket in (
            ("toward_target", as_controller, target),
            ("toward_controller", as_target, controller),
        ):
            try:
                side.receive(await receive(socket))  # the honest sealed identity
                results[name] = side.peer
            except PairingError as error:
                results[name] = error.code

    return attack


@asynccontextmanager
async def forwarding_relay() -> AsyncIterator[str]:
    """The reference relay's pairing behaviour, and nothing more (no protocol field)."""
    waiting: dict[str, ServerConnection] = {}
    peers: dict[ServerConnection, ServerConnection] = {}

    async def handler(socket: ServerConnection) -> None:
        try:
            async for text in socket:
                await _forward(socket, json.loads(text))
        except ConnectionClosed:
            pass
        finally:
            other = peers.pop(socket, None)
            if other is not None:
                peers.pop(other, None)
                await _quietly(send(other, {"type": "error", "code": "peer_disconnected"}))

    async def _forward(socket: ServerConnection, message: dict[str, Any]) -> None:
        kind, otc = message.get("type"), message.get("otc")
        if kind == "listen" and isinstance(otc, str):
            waiting[otc] = socket
            await send(socket, {"type": "ack", "message": "session_open"})
        elif kind == "connect" and isinstance(otc, str):
            target = waiting.pop(otc, None)
            if target is None:
                await send(socket, {"type": "error", "code": "otc_not_found"})
                return
            peers[target], peers[socket] = socket, target
            await send(target, {"type": "peer_found"})
            await send(socket, {"type": "peer_found"})
        elif kind == "data" and socket in peers:
            forwarded = {"type": "data"}
            if "payload" in message:
                forwarded["payload"] = message["payload"]
            await send(peers[socket], forwarded)
        elif kind == "done" and socket in peers:
            other = peers.pop(socket)
            peers.pop(other, None)
            await send(other, {"type": "done"})

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


async def _quietly(step: Awaitable[None]) -> None:
    with suppress(ConnectionClosed):
        await step


@contextmanager
def in_thread(relay: Callable[[], AbstractAsyncContextManager[str]]) -> Iterator[str]:
    """Run ``relay()`` on an event loop in a daemon thread; yields its URL."""
    started: list[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = []
    ready = threading.Event()

    async def main() -> None:
        stop = asyncio.Event()
        async with relay() as address:
            started.append((address, asyncio.get_running_loop(), stop))
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(STEP):
        raise RuntimeError("the test relay did not start")
    address, loop, stop = started[0]
    try:
        yield address
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(STEP)
