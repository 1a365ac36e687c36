"""A relay WebSocket connection with a deadline on every read, for pairing and the shell.

One compact JSON object per text frame, exactly as the reference relay and clients expect
(pairing.md §6.1, shell.md §0). Every failure becomes a :class:`PairingError`: an unreachable
relay, a closed socket (:class:`RelayClosed`), a read that timed out (:class:`RelayTimeout`,
also a :class:`TimeoutError`), a frame that is not a JSON object, and relay ``error`` frames
mapped to their own codes. Reads go straight to the socket, whose ``recv`` may be cancelled
without losing a message, so several readers in turn (a handshake, then a session) never
drop one between them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from types import TracebackType
from typing import Any

from authmesh.pairing._errors import PairingError

__all__ = [
    "MAX_FRAME_BYTES",
    "Frame",
    "RelayClosed",
    "RelayConnection",
    "RelayTimeout",
    "encode_frame",
    "json_object",
    "relay_error",
    "unreachable",
]

MAX_FRAME_BYTES = 65_536
Frame = dict[str, Any]  # one relay message, a JSON object
_CONNECT_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 2.0

# Relay error codes and the pairing error each becomes.
_RELAY_ERRORS = {
    "invalid_otc": "invalid_code",
    "otc_not_found": "code_not_found",
    "otc_expired": "code_not_found",
    "otc_burned": "code_not_found",
    "otc_in_use": "code_in_use",
    "peer_already_connected": "peer_already_connected",
    "peer_disconnected": "peer_disconnected",
    "rate_limited": "rate_limited",
    "relay_capacity": "relay_capacity",
    "relay_unavailable": "relay_unavailable",
    "session_expired": "session_expired",
}


def unreachable(url: str, exc: BaseException, timeout: float) -> PairingError:
    """``relay_unreachable`` naming the URL tried and why (refused, DNS, TLS, HTTP status)."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = " (wrong path? authmesh relays serve /ws)" if status == 404 else ""
        cause = f"it answered HTTP {status} instead of a WebSocket{hint}"
    elif isinstance(exc, socket.gaierror):
        cause = "DNS lookup of its host name failed"
    elif isinstance(exc, ssl.SSLError | ssl.CertificateError):
        cause = f"TLS error: {getattr(exc, 'reason', None) or exc}"
    elif isinstance(exc, ConnectionResetError) and url.startswith("wss://"):
        cause = "TLS error: the connection was reset in the handshake (a plain ws:// relay?)"
    elif isinstance(exc, ConnectionResetError):
        cause = "the connection was reset"
    elif isinstance(exc, ConnectionRefusedError):
        cause = "connection refused (nothing listens on that port)"
    elif isinstance(exc, TimeoutError):
        cause = f"no answer within {timeout:g} s"
    else:
        cause = str(exc) or type(exc).__name__
    return PairingError(
        "relay_unreachable",
        f"Could not reach the relay at {url}: {cause}. Check the relay URL (--relay or "
        "AMESH_RELAY_URL; a relay on another port or host must be named there in every "
        "terminal) and your network.",
    )


class RelayClosed(PairingError):
    """The relay connection is closed (by either side)."""

    def __init__(self) -> None:
        super().__init__("relay_closed")


class RelayTimeout(PairingError, TimeoutError):
    """Nothing arrived from the relay within the read's deadline."""

    def __init__(self) -> None:
        super().__init__("timeout")


def encode_frame(message: dict[str, Any]) -> str:
    """Compact JSON with non-ASCII characters raw, as the reference serialises."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def relay_error(message: dict[str, Any]) -> PairingError:
    """The pairing error for a relay ``{"type":"error","code":...}`` frame."""
    code = message.get("code")
    return PairingError(
        _RELAY_ERRORS.get(code, "relay_error") if isinstance(code, str) else "relay_error"
    )


def json_object(text: str | bytes) -> dict[str, Any]:
    """Parse a JSON object or fail with ``protocol_violation``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PairingError("protocol_violation") from exc
    if not isinstance(value, dict):
        raise PairingError("protocol_violation")
    return value


class RelayConnection:
    """An open relay socket. Use :meth:`open` (an async context manager)."""

    def __init__(self, socket: Any) -> None:
        self._socket = socket

    @classmethod
    async def open(
        cls, url: str, *, timeout: float = _CONNECT_TIMEOUT, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> RelayConnection:
        """Connect to ``url``; frames larger than ``max_frame_bytes`` are refused."""
        try:
            from websockets.asyncio.client import connect
            from websockets.exceptions import WebSocketException
        except ImportError as exc:
            raise PairingError("missing_dependency") from exc
        try:
            socket = await connect(
                url,
                open_timeout=timeout,
                close_timeout=_CLOSE_TIMEOUT,
                max_size=max_frame_bytes,
                compression=None,
            )
        except (OSError, TimeoutError, ValueError, WebSocketException) as exc:
            raise unreachable(url, exc, timeout) from exc
        return cls(socket)

    @property
    def close_reason(self) -> str:
        """The reason the relay gave when it closed the connection ('' if none)."""
        return str(getattr(self._socket, "close_reason", "") or "")

    async def __aenter__(self) -> RelayConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(encode_frame(message))

    async def send_text(self, text: str) -> None:
        """Send one message already encoded (a shell wire message)."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._socket.send(text)
        except ConnectionClosed as exc:
            raise RelayClosed() from exc

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        """The next JSON object from the relay, within ``timeout`` seconds (None: no limit)."""
        from websockets.exceptions import ConnectionClosed

        try:
            frame = await asyncio.wait_for(self._socket.recv(), timeout)
        except TimeoutError as exc:
            raise RelayTimeout() from exc
        except ConnectionClosed as exc:
            raise RelayClosed() from exc
        return json_object(frame)

    async def close(self) -> None:
        """Close the socket, waiting at most the close timeout for the relay's answer."""
        await self._socket.close()
