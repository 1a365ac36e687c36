"""What a shell session talks through, and relay messages dispatched by type.

Sockets are :class:`~authmesh.pairing._relay_client.RelayConnection`, the relay client pairing
uses too; its reads may be cancelled without losing a message, so nothing is discarded between
the handshake and the session (weakness W2).

A :class:`Channel` is what one shell session talks through: either a whole connection (the
controller's, or an agent's per-session socket) or a :class:`SessionPipe`, the slice of an
agent's registration socket that carries its one legacy session.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from authmesh.core.shell._wire import MAX_RELAY_MESSAGE, WireError, data_payload
from authmesh.pairing import PairingError
from authmesh.pairing._relay_client import RelayClosed, RelayConnection, RelayTimeout
from authmesh.shell._errors import SessionEnded, ShellError

__all__ = ["Channel", "SessionPipe", "connect", "receive_data"]

# Messages waiting for their consumer; at 64 KiB each this bounds a socket's backlog to 16 MiB.
_INBOX_LIMIT = 256
# A peer talking through a relay with a larger cap may send larger messages; refuse past this.
_MAX_RECEIVED_MESSAGE = 1024 * 1024 + MAX_RELAY_MESSAGE


class Channel(Protocol):
    """The message stream of one shell session."""

    async def send_text(self, text: str) -> None:
        """Send one relay message (already encoded); raises :class:`RelayClosed`."""
        ...

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        """The next message; raises :class:`RelayClosed` or :class:`TimeoutError`."""
        ...


async def connect(url: str) -> RelayConnection:
    """Open a relay connection for the shell; an unreachable relay is a :class:`ShellError`."""
    try:
        return await RelayConnection.open(url, max_frame_bytes=_MAX_RECEIVED_MESSAGE)
    except PairingError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValueError):
            message = (
                f"The relay URL {url!r} is not a WebSocket URL ({cause}); use ws:// or wss://."
            )
        else:
            detail = (str(cause) or type(cause).__name__) if cause is not None else exc.code
            message = (
                f"Could not reach the relay at {url} ({detail}); check the URL (--relay or "
                "AMESH_RELAY_URL) and your network."
            )
        raise ShellError(exc.code, message) from None


class SessionPipe:
    """The session slice of an agent's registration socket (legacy single-session relays).

    The registration loop :meth:`deliver`-s session messages (``data``, ``done``, session
    errors); the session sends through the shared socket.
    """

    def __init__(self, socket: RelayConnection) -> None:
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

    async def send_text(self, text: str) -> None:
        if self._ended:
            raise RelayClosed()
        await self._socket.send_text(text)

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        if self._ended and self._inbox.empty():
            raise RelayClosed()
        try:
            message = await asyncio.wait_for(self._inbox.get(), timeout)
        except TimeoutError:
            raise RelayTimeout() from None
        if message is None:
            raise RelayClosed()
        return message


async def receive_data(channel: Channel, timeout: float | None) -> bytes:
    """The payload of the next ``data`` message, dispatching by type (weakness W8).

    ``pong`` and unknown types are skipped; ``done`` and relay ``error`` messages end the
    session (:class:`SessionEnded` with the code); a payload that is not base64 text or a
    message that is not a JSON object ends it too, since no conforming party sends one.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            message = await channel.receive(remaining)
        except (RelayClosed, RelayTimeout):
            raise
        except PairingError:
            raise SessionEnded("invalid_message") from None
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
