"""A frame altered on the way ends the session cleanly, in either direction.

A real WebSocket proxy sits between the controller and the real relay and flips one ciphertext
bit of the next ``data`` message in one direction once the test arms it. The reference drops
such a frame and carries on; we end the session (the tag failure means someone on the path is
active), with no orphan process, a clear message and a non-zero status, and the agent serves
the next session.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from authmesh.core._b64 import b64decode, b64encode
from tests.support.relayproc import RelayProcess, wait_until
from tests.support.shell import (
    MARKER,
    AgentProcess,
    Homes,
    marked_processes,
    run_shell,
    spawn_shell,
)


class TamperProxy:
    """Forwards WebSocket messages both ways; corrupts one ``data`` message when armed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.armed: str | None = None  # "to_target" or "to_controller"
        self.tampered = threading.Event()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))

    def _alter(self, text: str, direction: str) -> str:
        if self.armed != direction:
            return text
        message = json.loads(text)
        if message.get("type") != "data":
            return text
        payload = bytearray(b64decode(message["payload"]))
        payload[-1] ^= 0x01  # one bit of the Poly1305 tag
        message["payload"] = b64encode(bytes(payload))
        self.armed = None
        self.tampered.set()
        return json.dumps(message, separators=(",", ":"))

    async def _pipe(self, source: object, sink: object, direction: str) -> None:
        try:
            async for text in source:  # type: ignore[attr-defined]
                await sink.send(self._alter(text, direction))  # type: ignore[attr-defined]
        except ConnectionClosed:
            pass
        finally:
            await sink.close()  # type: ignore[attr-defined]

    async def _handle(self, client: ServerConnection) -> None:
        async with connect(self.upstream) as relay:
            await asyncio.gather(
                self._pipe(client, relay, "to_target"), self._pipe(relay, client, "to_controller")
            )

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/ws"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def proxy(session_relay: RelayProcess) -> Iterator[TamperProxy]:
    tamper = TamperProxy(session_relay.url)
    tamper.start()
    yield tamper
    tamper.stop()


@pytest.mark.parametrize(
    ("direction", "message"),
    [
        ("to_target", "the target ended the session"),
        ("to_controller", "failed authentication"),
    ],
)
def test_tampered_frame_ends_the_session_cleanly(
    homes: Homes,
    session_relay: RelayProcess,
    healthy_agent: AgentProcess,
    scratch: Path,
    proxy: TamperProxy,
    direction: str,
    message: str,
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch, url=proxy.url)
    child.send(f"sleep {MARKER}3 & echo P$((4+5))P\r")
    child.expect_exact("P9P")
    wait_until(lambda: len(marked_processes()) == 1, 10, "the background sleep to start")
    proxy.armed = direction
    child.send("echo after-tamper\r")
    assert proxy.tampered.wait(10)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 255
    assert message in " ".join(child.before.replace("›", " ").split())
    wait_until(lambda: not marked_processes(), 10, "the tampered session's processes to end")
    if direction == "to_target":
        healthy_agent.wait_for("failed authentication")
    result = run_shell(homes.controller, session_relay, scratch, "-c", "echo fine")
    assert result.returncode == 0 and "fine" in result.stdout, result.stderr
