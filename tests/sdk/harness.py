"""Real servers on 127.0.0.1 for the SDK tests, and a raw HTTP/1.1 client.

uvicorn runs ASGI apps in a thread, werkzeug's ``make_server`` runs WSGI apps (Flask
and Django) in a thread; both listen on port 0. Requests are written byte for byte
over a socket so the tests control the exact request line and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from werkzeug.serving import make_server

DEADLINE_SECONDS = 10.0


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that cannot take 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> None:
    """Poll ``condition`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def uvicorn_server(app: Any) -> Iterator[int]:
    """Serve an ASGI app with uvicorn (one worker, h11) in a thread; yield the port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_for(lambda: server.started, "uvicorn to start")
    port: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(DEADLINE_SECONDS)


@contextmanager
def wsgi_server(app: Any) -> Iterator[int]:
    """Serve a WSGI app with werkzeug's threaded server; yield the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(DEADLINE_SECONDS)


def build_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    chunked: bool = False,
) -> bytes:
    """The harness's request layout (middleware.json ``implicit_headers``)."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def send_raw(port: int, data: bytes) -> RawResponse:
    """Send ``data`` over a fresh connection and read the response until close.

    The body is sent from a second thread while this one reads: some servers answer
    early (413) and close, others drain the whole body first; both must work.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS) as sock:

        def send_all() -> None:
            with contextlib.suppress(OSError):  # the server may close before reading it all
                sock.sendall(data)

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the server closed on unread body bytes after answering
        sender.join(DEADLINE_SECONDS)
    response_head, _, body = received.partition(b"\r\n\r\n")
    if not response_head:
        raise ConnectionError("the server closed the connection without answering")
    status_line, *header_lines = response_head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if "chunked" in headers.get("transfer-encoding", ""):
        body = _dechunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)
