"""The relay's HTTP side: reading one request head, and the plain answers it serves.

Every connection starts here. The head is read under a size limit; ``/health``,
``/metrics`` and unknown paths are answered and the connection closed; a WebSocket upgrade
on ``/ws`` is handed, bytes and all, to the compiled WebSocket transport (``server.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["MAX_HEAD_BYTES", "HttpError", "Request", "parse_head", "response", "upgrade_head"]

# Request heads above this are refused (400) before they are parsed.
MAX_HEAD_BYTES = 8192
_MAX_HEADERS = 64


class HttpError(ValueError):
    """The request head is not one the relay accepts (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    upgrade: bool  # Upgrade: websocket and Connection: upgrade
    forwarded_for: list[str]
    websocket_key: bytes = b""
    websocket_version: bytes = b""


def parse_head(head: bytes) -> Request:
    """The fields the relay reads from a request head (without its final blank line)."""
    lines = head.split(b"\r\n")
    if len(lines) - 1 > _MAX_HEADERS:
        raise HttpError("too many headers")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise HttpError("malformed request line")
    method, target = parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")
    upgrade = connection = False
    key = version = b""
    forwarded: list[str] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HttpError("malformed header")
        lowered, value = name.lower(), value.strip()
        if lowered == b"upgrade":
            upgrade = value.lower() == b"websocket"
        elif lowered == b"connection":
            connection = b"upgrade" in (token.strip() for token in value.lower().split(b","))
        elif lowered == b"sec-websocket-key":
            key = value
        elif lowered == b"sec-websocket-version":
            version = value
        elif lowered == b"x-forwarded-for":
            forwarded.append(value.decode("ascii", "replace"))
    path = target.split("?", 1)[0].split("#", 1)[0]
    return Request(method, path, upgrade and connection, forwarded, key, version)


def upgrade_head(request: Request) -> bytes:
    """The upgrade request reduced to what the WebSocket handshake reads (the transport
    keeps the head it parsed for the socket's lifetime, so it gets the smallest one)."""
    return (
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Sec-WebSocket-Version: " + request.websocket_version + b"\r\n"
        b"Sec-WebSocket-Key: " + request.websocket_key + b"\r\n\r\n"
    )


def response(status: int, body: str, content_type: str, head: bool = False) -> bytes:
    """A complete response that ends the connection (HEAD: the headers only)."""
    payload = body.encode()
    phrase = HTTPStatus(status).phrase
    lines = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return lines.encode() + (b"" if head else payload)
