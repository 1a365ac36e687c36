"""Relay sockets for the shell: one reader per socket, messages dispatched by type.

A :class:`RelaySocket` owns a WebSocket to the relay and a single reader task that parses
every text frame into a JSON object and queues it (bounded; a full queue stops reading, which
pushes back on the relay). Nothing is ever discarded between the handshake and the session
(weakness W2): whoever consumes the socket sees every message in order.

A :class:`Channel` is what one shell session talks through: either a whole socket (the
controller's, or an agent's per-session socket) or a :class:`SessionPipe`, the slice of an
agent's registration socket that carries its one legacy session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

from authmesh.core.shell.wire import MAX_RELAY_MESSAGE, WireError, data_payload
from authmesh.shell.errors import ChannelClosed, SessionEnded, ShellError

__all__ = [
    "CLOSE_TIMEOUT",
    "CONNECT_TIMEOUT",
    "Channel",
    "RelaySocket",
    "SessionPipe",
    "encode_message",
    "receive_data",
]

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
# Messages waiting for their consumer; at 64 KiB each this bounds a socket's backlog to 16 MiB.
_INBOX_LIMIT = 256
# A peer talking through a relay with a larger cap may send larger messages; refuse past this.
_MAX_RECEIVED_MESSAGE = 1024 * 1024 + MAX_RELAY_MESSAGE


def encode_message(message: dict[str, Any]) -> str:
    """Compact JSON, the form every reference party sends."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


class Channel(Protocol):
    """The message stream of one shell session."""

    async def send(self, text: str) -> None:
        """Send one relay message (already encoded); raises :class:`ChannelClosed`."""
        ...

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        """The next message; raises :class:`ChannelClosed` or :class:`TimeoutError`."""
        ...


class RelaySocket:
    """An open relay WebSocket with its reader task. Use :meth:`connect`."""

    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_INBOX_LIMIT)
        self._closed = asyncio.Event()
        self.close_reason = ""
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, *, timeout: float = CONNECT_TIMEOUT) -> RelaySocket:
        """Open a socket to ``url``; an unreachable relay is a :class:`ShellError`."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        try:
            socket = await connect(
                url,
                open_timeout=timeout,
                close_timeout=CLOSE_TIMEOUT,
                max_size=_MAX_RECEIVED_MESSAGE,
                compression=None,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ShellError(
                "relay_unreachable",
                f"Could not reach the relay at {url} ({exc or type(exc).__name__}); check the "
                "URL (--relay or AMESH_RELAY_URL) and your network.",
            ) from None
        except ValueError as exc:
            raise ShellError(
                "relay_unreachable",
                f"The relay URL {url!r} is not a WebSocket URL ({exc}); use ws:// or wss://.",
            ) from None
        return cls(socket)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed as SocketClosed

        try:
            async for raw in self._socket:
                if not isinstance(raw, str):
                    continue  # reference parties only ever send text frames
                try:
                    message = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                if isinstance(message, dict):
                    await self._inbox.put(message)
        except SocketClosed:
            pass
        finally:
            rcvd = getattr(self._socket, "close_rcvd", None)
            self.close_reason = str(getattr(rcvd, "reason", "") or "")
            self._closed.set()
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(None)

    async def send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed as SocketClosed

        if self._closed.is_set():
            raise ChannelClosed("relay connection closed")
        try:
            await self._socket.send(text)
        except SocketClosed:
            raise ChannelClosed("relay connection closed") from None

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        if self._inbox.empty() and self._closed.is_set():
            raise ChannelClosed("relay connection closed")
        message = await asyncio.wait_for(self._inbox.get(), timeout)
        if message is None:
            raise ChannelClosed("relay connection closed")
        return message

    async def close(self) -> None:
        """Close the socket (waits at most :data:`CLOSE_TIMEOUT`) and stop the reader."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._socket.close(), CLOSE_TIMEOUT)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        self._closed.set()


class SessionPipe:
    """The session slice of an agent's registration socket (legacy single-session relays).

    The registration loop :meth:`deliver`-s session messages (``data``, ``done``, session
    errors); the session sends through the shared socket.
    """

    def __init__(self, socket: RelaySocket) -> None:
        self._socket = socket
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_INBOX_LIMIT)
        self._ended = False

    async def deliver(self, message: dict[str, Any]) -> None:
        if not self._ended:
            await self._inbox.put(message)

    def end(self) -> None:
        """The registration socket is gone: the session's next read fails."""
        self._ended = True
        # Unblock a registration loop waiting to deliver to a session that stopped reading.
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._inbox.put_nowait(None)

    async def send(self, text: str) -> None:
        if self._ended:
            raise ChannelClosed("relay connection closed")
        await self._socket.send(text)

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        if self._ended and self._inbox.empty():
            raise ChannelClosed("relay connection closed")
        message = await asyncio.wait_for(self._inbox.get(), timeout)
        if message is None:
            raise ChannelClosed("relay connection closed")
        return message


async def receive_data(channel: Channel, timeout: float | None) -> bytes:
    """The payload of the next ``data`` message, dispatching by type (weakness W8).

    ``pong`` and unknown types are skipped; ``done`` and relay ``error`` messages end the
    session (:class:`SessionEnded` with the code); a payload that is not base64 text ends it
    too, since no conforming peer sends one.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        message = await channel.receive(remaining)
        kind = message.get("type")
        if kind == "data":
            try:
                return data_payload(message.get("payload"))
            except WireError:
                raise SessionEnded("invalid_payload") from None
        if kind == "done":
            raise SessionEnded("done")
        if kind == "error":
            code = message.get("code")
            raise SessionEnded(code if isinstance(code, str) else "error")
