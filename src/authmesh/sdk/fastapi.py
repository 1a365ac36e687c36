"""FastAPI dependencies giving the verified device to a route.

With :class:`~authmesh.sdk.asgi.AuthMeshMiddleware` installed, use
``device: VerifiedDevice = Depends(verified_device)``. Without the middleware,
``Depends(AuthMeshDependency(verifier))`` verifies per route; its refusals are
``HTTPException``\\s, so their bodies follow FastAPI's ``{"detail": "<code>"}`` shape
(the middleware is the adapter that answers byte-for-byte like the reference).

Both are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a
hop that cost more server CPU per request than the signature check itself.
"""

from __future__ import annotations

from authmesh.errors import requires_extra

with requires_extra("fastapi", "authmesh.sdk.fastapi"):
    from fastapi import HTTPException, Request, Response

from authmesh.sdk._rotation import ACK_HEADER, ROTATION_HEADER_ASGI
from authmesh.sdk._verifier import Rejection, VerifiedDevice, Verifier
from authmesh.sdk.asgi import (
    BODY_TIMEOUT_SECONDS,
    ClientDisconnected,
    read_body_within,
    request_target,
    wanted_headers,
)

__all__ = ["AuthMeshDependency", "verified_device"]


async def verified_device(request: Request) -> VerifiedDevice:
    """The device the middleware verified; 500 if the middleware is not installed."""
    # Read from the scope: ``request.state`` would build a State object per request.
    device = request.scope.get("state", {}).get("authmesh")
    if not isinstance(device, VerifiedDevice):
        raise HTTPException(
            500, detail="AuthMeshMiddleware is not installed in front of this route."
        )
    return device


class AuthMeshDependency:
    """Verifies the request inside the route's dependencies (no middleware needed).

    ``body_timeout_seconds``: a body not complete by then is refused with 408, as by the
    middleware. A key rotation the request carried is acknowledged on the response."""

    def __init__(
        self, verifier: Verifier, body_timeout_seconds: float = BODY_TIMEOUT_SECONDS
    ) -> None:
        self.verifier = verifier
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, request: Request, response: Response) -> VerifiedDevice:
        existing = getattr(request.state, "authmesh", None)
        if isinstance(existing, VerifiedDevice):
            return existing
        verifier = self.verifier
        headers = wanted_headers(request.scope["headers"])
        try:
            pending = verifier.begin(
                request.method,
                request_target(request.scope),
                headers.get(b"authorization"),
                headers.get(b"host"),
                headers.get(ROTATION_HEADER_ASGI),
            )
            verifier.check_content_length(headers.get(b"content-length"))
            body = await self._body(request)
            device = await verifier.finish_async(pending, body)
        except Rejection as rejection:
            raise HTTPException(
                rejection.status, detail=rejection.error, headers=dict(rejection.headers[1:])
            ) from None
        except ClientDisconnected:  # nobody reads the answer; no traceback in the log
            raise HTTPException(400, detail="client_disconnected") from None
        if device.rotation_ack is not None:
            response.headers[ACK_HEADER] = device.rotation_ack
        request.state.authmesh = device
        return device

    async def _body(self, request: Request) -> bytes:
        """The request body, read once: FastAPI has already read it for a route with a body
        parameter; otherwise it is read here and left where Starlette caches it, so the
        route can still read it."""
        body: bytes | None = getattr(request, "_body", None)
        if body is None:
            body = await read_body_within(request.receive, self.verifier, self.body_timeout_seconds)
            request._body = body
        elif len(body) > self.verifier.max_body_bytes:
            raise self.verifier.too_large()
        return body
