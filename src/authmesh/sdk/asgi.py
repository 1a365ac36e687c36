"""Pure ASGI middleware (FastAPI, Starlette, any ASGI app).

It reads the raw body itself — before any framework parses it — bounded by the
verifier's ``max_body_bytes`` (413 on a larger ``Content-Length`` or stream), hands
the same bytes on to the app, and stores the :class:`VerifiedDevice` in
``scope["state"]["authmesh"]``, i.e. ``request.state.authmesh`` in Starlette.

The path signed is the original ``raw_path`` plus query string, so mounting the
app under a prefix (Starlette ``Mount``) does not break signatures (W6).
WebSocket handshakes are verified as bodiless GETs and refused (403) otherwise, so
a WebSocket route behind the middleware is never left open.

Per request the headers are scanned once, and an HTTP/1.x request that declares no
body (neither ``Content-Length`` nor ``Transfer-Encoding``) is read without arming
the body timer: its framing says the body is empty, so the server already holds the
whole message and ``receive`` cannot wait on the client.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

from authmesh.sdk._rotation import ACK_HEADER, ROTATION_HEADER_ASGI
from authmesh.sdk._verifier import Rejection, VerifiedDevice, Verifier

__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "AuthMeshMiddleware",
    "ClientDisconnected",
    "read_body_within",
    "request_target",
    "wanted_headers",
]

BODY_TIMEOUT_SECONDS = 30.0
"""Longest wait for the whole request body; a stalled upload gets 408."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client went away while we were reading its body."""


_HEADERS_READ = frozenset(
    (b"authorization", b"host", b"content-length", b"transfer-encoding", ROTATION_HEADER_ASGI)
)


def wanted_headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """First value of each header the middleware reads, in one pass (OWS stripped)."""
    found: dict[bytes, str] = {}
    for key, value in headers:
        name = key.lower()
        if name in _HEADERS_READ and name not in found:
            found[name] = value.decode("latin-1").strip(" \t")
    return found


def request_target(scope: Scope) -> str:
    """The request-target as received: ``raw_path`` (or the encoded path) and query."""
    raw_path = scope.get("raw_path")
    if raw_path is None:
        raw_path = (scope.get("root_path", "") + scope["path"]).encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    target = bytes(raw_path) + (b"?" + query if query else b"")
    return target.decode("latin-1")


async def send_rejection(send: Send, rejection: Rejection) -> None:
    """Answer with the rejection's status, headers and compact JSON body."""
    body = rejection.body
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rejection.headers]
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, verifier: Verifier, first: Message | None = None) -> bytes:
    """The whole body, from ``first`` (a message already received, if any) on."""
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive() if first is None else first
        first = None
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > verifier.max_body_bytes:
            raise verifier.too_large()
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


async def read_body_within(receive: Receive, verifier: Verifier, seconds: float) -> bytes:
    """:func:`_read_body` bounded to ``seconds``, the timer armed only if a ``receive`` waits.

    Usually the whole body arrived with the headers, so the first ``receive()`` completes
    without suspending: it is stepped once by hand and, if it is done, no timer is armed
    (arming and disarming one cost more than the rest of the read). Otherwise the same
    call is finished under the timeout exactly as ``await`` would have finished it.
    """
    steps = receive().__await__()
    try:
        awaited = steps.send(None)
    except StopIteration as done:
        first: Message | None = done.value
        if first is not None and first["type"] == "http.request" and not first.get("more_body"):
            return await _read_body(receive, verifier, first)
    else:
        first = None
    try:
        async with asyncio.timeout(seconds):
            if first is None:
                first = await _resumed(steps, awaited)
            return await _read_body(receive, verifier, first)
    except TimeoutError:
        raise verifier.timed_out() from None


@types.coroutine
def _resumed(steps: Generator[Any, Any, Message], awaited: Any) -> Generator[Any, Any, Message]:
    """Finish an awaitable already run up to its first suspension, as ``await`` does."""
    while True:
        try:
            sent = yield awaited
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as error:  # cancellation and the like belong to the awaitable
            try:
                awaited = steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                awaited = steps.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


def _acknowledging(send: Send, device: VerifiedDevice) -> Send:
    """``send`` adding the key-rotation acknowledgement to the response head, if any."""
    if device.rotation_ack is None:
        return send
    ack = (ACK_HEADER.lower().encode("latin-1"), device.rotation_ack.encode("ascii"))

    async def send_with_ack(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), ack]}
        await send(message)

    return send_with_ack


class AuthMeshMiddleware:
    """``app.add_middleware(AuthMeshMiddleware, verifier=Verifier(...))``.

    ``exempt_paths``: exact paths (e.g. ``{"/health"}``) served without a signature.
    ``body_timeout_seconds``: a body not complete by then is refused with 408.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        exempt_paths: frozenset[str] | set[str] = frozenset(),
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        headers = wanted_headers(scope["headers"])
        verifier = self.verifier
        try:
            pending = verifier.begin(
                scope["method"],
                request_target(scope),
                headers.get(b"authorization"),
                headers.get(b"host"),
                headers.get(ROTATION_HEADER_ASGI),
            )
            body = await self._body(scope, headers, receive)
            device = await verifier.finish_async(pending, body)
        except Rejection as rejection:
            await send_rejection(send, rejection)
            return
        except ClientDisconnected:
            return
        scope.setdefault("state", {})["authmesh"] = device
        replayed = False

        async def replay_body() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay_body, _acknowledging(send, device))

    async def _body(self, scope: Scope, headers: dict[bytes, str], receive: Receive) -> bytes:
        """The whole body, bounded in size and (when it may still be in flight) in time."""
        verifier = self.verifier
        content_length = verifier.check_content_length(headers.get(b"content-length"))
        if (
            content_length is None
            and b"transfer-encoding" not in headers
            and scope.get("http_version") in ("1.1", "1.0")
        ):
            return await _read_body(receive, verifier)
        return await read_body_within(receive, verifier, self.body_timeout_seconds)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake is a bodiless GET: verified the same way, or refused (403)."""
        headers = wanted_headers(scope["headers"])
        try:
            pending = self.verifier.begin(
                "GET", request_target(scope), headers.get(b"authorization"), headers.get(b"host")
            )
            device = await self.verifier.finish_async(pending, b"")
        except Rejection:
            await send({"type": "websocket.close", "code": 1008})
            return
        scope.setdefault("state", {})["authmesh"] = device
        await self.app(scope, receive, send)
