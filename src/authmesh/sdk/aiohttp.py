"""aiohttp adapters: a client middleware that signs, a server middleware that verifies.

Client (aiohttp client middlewares; the extra requires aiohttp 3.14 for ``web.RequestKey``)::

    async with aiohttp.ClientSession(middlewares=(AuthMeshClientMiddleware(),)) as session:
        await session.post(url, json={"amount": 1})

The signature covers what goes on the wire, as with :class:`~authmesh.sdk.AuthMeshAuth`:
the request-target aiohttp sends (``url.raw_path_qs``, which must be in the normal form
servers require: aiohttp's own quoting gives it except for a few query characters, such
as ``'``, where the middleware refuses and names the URL to pass), the ``Host`` header
for version 2, and the exact body bytes. ``bytes``, text and JSON bodies are hashed as
they are; streams, files and multipart forms are buffered (at most ``max_body_bytes``)
and sent from the buffer. A session with ``compress=`` is refused: the server hashes
the bytes it receives. With a home's identity the middleware follows ``amesh rotate``:
it signs with the current key and announces a rotation until the server acknowledges it
(without the retry on 401 that :class:`~authmesh.sdk.AuthMeshAuth` adds for httpx).

Server (``web.Application(middlewares=[AuthMeshAiohttpMiddleware(verifier)])``): the
body is read once with ``request.read()``, bounded by the verifier's
``max_body_bytes`` (a chunked body by aiohttp's ``client_max_size`` while it is read, then
by the verifier's limit), so handlers use ``await request.read()``, ``.text()``, ``.json()``
and ``.post()`` (URL-encoded) as usual; streaming reads (``request.content``,
``request.multipart()``) find the stream consumed. The verified device is
``request[AUTHMESH_DEVICE]``; the signed target is the raw request-target as received.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from authmesh.errors import requires_extra

with requires_extra("aiohttp", "authmesh.sdk.aiohttp"):
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs, web
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.payload import BytesPayload, Payload

from authmesh.core import CanonicalError, body_sha256
from authmesh.core._canonical import normalize_authority
from authmesh.sdk._client import AuthMeshAuth, SigningError, _too_large, _wire_target
from authmesh.sdk._rotation import ACK_HEADER, ROTATION_HEADER
from authmesh.sdk._verifier import SERVER_TIME_HEADER, Rejection, VerifiedDevice, Verifier
from authmesh.sdk.asgi import BODY_TIMEOUT_SECONDS

__all__ = ["AUTHMESH_DEVICE", "AuthMeshAiohttpMiddleware", "AuthMeshClientMiddleware"]

AUTHMESH_DEVICE: web.RequestKey[VerifiedDevice] = web.RequestKey("authmesh", VerifiedDevice)
"""Where the server middleware puts the verified caller: ``request[AUTHMESH_DEVICE]``."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BoundedCollector(AbstractStreamWriter):
    """A stream writer that keeps what a payload writes, refusing more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise _too_large(self.limit)
        self.chunks.append(bytes(chunk))

    async def write_eof(self, chunk: bytes = b"") -> None:
        await self.write(chunk)

    async def drain(self) -> None:
        return None

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise SigningError("A compressed request body cannot be signed; send it uncompressed.")

    def enable_chunking(self) -> None:
        return None

    async def write_headers(self, status_line: str, headers: Any) -> None:
        return None

    def send_headers(self) -> None:
        return None


async def _body_bytes(request: ClientRequest, limit: int) -> bytes:
    """The exact body bytes; anything but a bytes payload is buffered and sent from the buffer."""
    body = request.body
    if not isinstance(body, Payload):
        return b""
    if body.size is not None and body.size > limit:
        raise _too_large(limit)
    if isinstance(body, BytesPayload):  # bytes, text and JSON: immutable, read in place
        return await body.as_bytes()
    collector = _BoundedCollector(limit)
    await body.write(collector)
    data = b"".join(collector.chunks)
    await request.update_body(data)
    return data


def _sent_target(request: ClientRequest) -> str:
    """The request-target aiohttp sends, which must already be in normal form (servers
    refuse any other spelling); the middleware cannot change the URL it is given."""
    sent = request.url.raw_path_qs
    target = _wire_target(sent)
    if target != sent:
        raise SigningError(
            f"aiohttp would send the request-target {sent!r}, which is not in normal form; "
            f"request yarl.URL(<origin> + {target!r}, encoded=True) instead."
        )
    return target


class AuthMeshClientMiddleware:
    """Signs every request of an ``aiohttp.ClientSession`` (``middlewares=(...,)``).

    ``auth`` carries the key, version, body limit and clock behaviour
    (:class:`~authmesh.sdk.AuthMeshAuth`); without it the identity of ``home`` is
    loaded once and ``peer`` picks the signature version, as for
    :class:`~authmesh.sdk.Client`.
    """

    def __init__(
        self,
        auth: AuthMeshAuth | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        peer: str | None = None,
    ) -> None:
        self.auth = auth or AuthMeshAuth.from_home(home, peer=peer)

    def _sign(self, request: ClientRequest, body: bytes) -> None:
        server = request.headers.get(hdrs.HOST, "")
        signer = self.auth._current_signer(server)  # follows ``amesh rotate``
        authority = None
        if signer.version == "2":
            try:
                authority = normalize_authority(request.headers.get(hdrs.HOST, ""))
            except CanonicalError as error:
                raise SigningError(f"The request URL cannot be signed: {error}.") from None
        request.headers[hdrs.AUTHORIZATION] = signer.authorization(
            request.method, _sent_target(request), body_sha256(body), authority
        )
        self.auth._announce(request.headers, server, signer)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if request.compress:
            raise SigningError("A compressed request body cannot be signed; drop compress=.")
        body = await _body_bytes(request, self.auth.max_body_bytes)
        self._sign(request, body)
        response = await handler(request)
        if self.auth.rotation is not None:
            server = request.headers.get(hdrs.HOST, "")
            self.auth.rotation.observe(server, response.headers.get(ACK_HEADER))
        if (
            self.auth.adopt_server_time
            and response.status == 401
            and self.auth.signer.learn_server_time(response.headers.get(SERVER_TIME_HEADER))
        ):
            response.release()
            self._sign(request, body)
            response = await handler(request)
        return response


def _rejection_response(rejection: Rejection) -> web.Response:
    return web.Response(status=rejection.status, body=rejection.body, headers=rejection.headers)


class AuthMeshAiohttpMiddleware:
    """aiohttp server middleware: ``web.Application(middlewares=[AuthMeshAiohttpMiddleware(v)])``.

    ``exempt_paths``: exact paths (e.g. ``{"/health"}``) served without a signature.
    ``body_timeout_seconds``: a body not complete by then is refused with 408.
    Refusals carry the reference's status and JSON body, as the other adapters.
    """

    __middleware_version__ = 1  # aiohttp's marker for a new-style middleware

    def __init__(
        self,
        verifier: Verifier,
        exempt_paths: frozenset[str] | set[str] = frozenset(),
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)
        self.body_timeout_seconds = body_timeout_seconds

    async def _read_body(self, request: web.Request) -> bytes:
        if not request.body_exists:
            return b""
        try:
            if request.content.is_eof():  # all of it has arrived: no wait, no timer
                body = await request.read()
            else:
                async with asyncio.timeout(self.body_timeout_seconds):
                    body = await request.read()
        except TimeoutError:
            raise self.verifier.timed_out() from None
        except web.HTTPRequestEntityTooLarge:  # beyond the app's own client_max_size
            raise self.verifier.too_large() from None
        if len(body) > self.verifier.max_body_bytes:
            raise self.verifier.too_large()
        return body

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self.exempt_paths:
            return await handler(request)
        verifier = self.verifier
        headers = request.headers
        authorization = headers.get(hdrs.AUTHORIZATION)
        try:
            pending = verifier.begin(
                request.method,
                request.raw_path,
                authorization.strip(" \t") if authorization else None,
                headers.get(hdrs.HOST),
                headers.get(ROTATION_HEADER),
            )
            verifier.check_content_length(headers.get(hdrs.CONTENT_LENGTH))
            body = await self._read_body(request)
            device = await verifier.finish_async(pending, body)
        except Rejection as rejection:
            return _rejection_response(rejection)
        request[AUTHMESH_DEVICE] = device
        response = await handler(request)
        if device.rotation_ack is not None and not response.prepared:
            response.headers[ACK_HEADER] = device.rotation_ack
        return response
