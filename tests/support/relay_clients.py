"""WebSocket and HTTP clients for relay processes, with deadlines on every wait."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.relayproc import RelayProcess

RECV_DEADLINE = 5.0


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] = {}
) -> tuple[int, str, dict[str, str], bytes]:
    """One HTTP/1.1 request to the relay: (status, reason, lower-cased headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=RECV_DEADLINE)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        payload = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
        return response.status, response.reason, found, payload
    finally:
        connection.close()


class Reaper:
    """Relays finished with get SIGTERM at once; their exit status (0: graceful shutdown) is
    checked when the session ends, so no test waits for a process to exit."""

    def __init__(self) -> None:
        self._finished: list[RelayProcess] = []

    def release(self, relay: RelayProcess) -> None:
        assert relay.alive(), f"the relay process died during the test: {relay.stderr_text()}"
        relay.terminate()
        self._finished.append(relay)

    def close(self) -> None:
        failures = [r.stderr_text() for r in self._finished if r.stop() != 0]
        assert not failures, f"relays did not shut down cleanly: {failures}"


SHARED_ENV = {"AMESH_TRUST_PROXY": "1"}


async def wait_idle(relay: RelayProcess) -> None:
    """Wait until the relay holds no connection, session or agent (memory back to baseline)."""

    def idle() -> bool:
        metrics = relay.metrics()
        return (
            metrics["authmesh_relay_connections"] == 0
            and metrics["authmesh_relay_sessions"] == 0
            and metrics["authmesh_relay_agents"] == 0
            and metrics["authmesh_relay_bootstrap_watchers"] == 0
        )

    await wait_for(idle)


class Client:
    """A WebSocket client of the relay with per-frame deadlines."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: str | bytes | dict[str, Any]) -> None:
        if isinstance(message, dict):
            message = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        await self.ws.send(message)

    async def recv(self, timeout: float = RECV_DEADLINE) -> str:
        message = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(message, str), "the relay must only send text frames"
        return message

    async def recv_json(self, timeout: float = RECV_DEADLINE) -> Any:
        return json.loads(await self.recv(timeout))

    async def request(self, message: dict[str, Any]) -> Any:
        await self.send(message)
        return await self.recv_json()

    async def sync(self) -> None:
        """Round trip a ping: everything this client sent before has been processed."""
        await self.send({"type": "ping"})
        assert await self.recv() == '{"type":"pong"}'

    async def replies(self) -> list[Any]:
        """Every frame the relay sent in answer to what this client sent so far."""
        await self.send({"type": "ping"})
        frames = []
        while (text := await self.recv()) != '{"type":"pong"}':
            frames.append(json.loads(text))
        return frames

    async def closed(self, timeout: float = RECV_DEADLINE) -> tuple[int | None, str | None]:
        """Wait until the relay closed the socket; returns the close code and reason."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code, self.ws.close_reason

    async def close(self) -> None:
        await self.ws.close()


async def watcher_acks(watcher: Client, target: Client, jti: str) -> None:
    """The watcher accepts ``jti``; the target receives the ack with its signature (W4)."""
    await watcher.send(
        {"type": "bootstrap_ack", "jti": jti, "publicKey": "P", "controllerSig": "S"}
    )
    assert await target.recv_json() == {
        "type": "bootstrap_ack",
        "jti": jti,
        "controllerPubKey": "P",
        "controllerSig": "S",
    }


async def open_client(
    relay: RelayProcess, headers: Mapping[str, str] | None = None, source: str | None = None
) -> Client:
    """A client of ``relay``; ``source`` picks another loopback address (another client IP)."""
    ws = await connect(
        relay.url,
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=RECV_DEADLINE,
        close_timeout=1,
        additional_headers=dict(headers or {}),
        local_addr=(source, 0) if source else None,
    )
    return Client(ws)


async def wait_for(condition: Any, timeout: float = RECV_DEADLINE, interval: float = 0.02) -> None:
    """Poll a (sync or async) condition until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def pair(relay: RelayProcess, otc: str = "482916", source: str | None = None) -> None:
    """A legitimate target and controller pair and exchange one frame each way."""
    target = await open_client(relay, source=source)
    controller = await open_client(relay, source=source)
    try:
        assert await target.request({"type": "listen", "otc": otc}) == {
            "type": "ack",
            "message": "session_open",
        }
        assert await controller.request({"type": "connect", "otc": otc}) == {"type": "peer_found"}
        assert await target.recv_json() == {"type": "peer_found"}
        await target.send({"type": "data", "payload": "hello"})
        assert await controller.recv_json() == {"type": "data", "payload": "hello"}
        await controller.send({"type": "data", "payload": "world"})
        assert await target.recv_json() == {"type": "data", "payload": "world"}
    finally:
        await target.close()
        await controller.close()
