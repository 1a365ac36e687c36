"""The benchmarks' load client: picows (compiled frame handling) on uvloop.

A pure-Python client costs more CPU per session than the relay it measures, so the load
generator would be the bottleneck; this one is a thin layer over picows' own client.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from relay_harness import FRAME_TIMEOUT_S

__all__ = ["Client", "run"]

_TEXT, _CLOSE = WSMsgType.TEXT, WSMsgType.CLOSE
# Not a Logger: picows then makes no child logger per connection.
_QUIET = logging.LoggerAdapter(logging.getLogger("bench.picows"), {})
_QUIET.logger.setLevel(logging.CRITICAL)


def run(main: Any) -> Any:
    """Run a load coroutine on uvloop."""
    return uvloop.run(main)


class _Listener(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.inbox: collections.deque[bytes] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.gone = False

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == _TEXT:
            self.inbox.append(frame.get_payload_as_bytes())
            self._wake()
        elif kind == _CLOSE:
            if not transport.is_close_frame_sent:
                transport.send(_CLOSE, frame.get_payload_as_bytes())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gone = True
        self._wake()


class Client:
    """One WebSocket to the relay: send text, receive frames with a deadline, close."""

    def __init__(self, transport: WSTransport, listener: _Listener) -> None:
        self.transport = transport
        self.listener = listener

    @classmethod
    async def open(cls, url: str) -> Client:
        transport, listener = await ws_connect(
            _Listener, url, websocket_handshake_timeout=FRAME_TIMEOUT_S, logger_name=_QUIET
        )
        return cls(transport, listener)

    def send(self, text: str | bytes) -> None:
        self.transport.send(_TEXT, text)

    async def recv(self) -> bytes:
        listener = self.listener
        if not listener.inbox:
            async with asyncio.timeout(FRAME_TIMEOUT_S):
                while not listener.inbox:
                    if listener.gone:
                        raise ConnectionError("the relay closed the socket")
                    listener.waiter = asyncio.get_running_loop().create_future()
                    await listener.waiter
        return listener.inbox.popleft()

    async def expect(self, frame_type: str) -> None:
        frame = json.loads(await self.recv())
        if frame.get("type") != frame_type:
            raise RuntimeError(f"expected {frame_type}, relay sent {frame}")

    async def close(self) -> None:
        if not self.listener.gone:
            self.transport.send_close(WSCloseCode.OK)
            async with asyncio.timeout(FRAME_TIMEOUT_S):
                await self.transport.wait_disconnected()
