"""Request signing clients and verification middleware for AuthMesh.

Clients: :class:`AuthMeshAuth` (httpx sync/async and requests), :class:`Client` and
:class:`AsyncClient`, :class:`AuthMeshClientMiddleware` (aiohttp). Servers: the
transport-free :class:`Verifier` and its adapters in :mod:`authmesh.sdk.asgi`,
:mod:`authmesh.sdk.wsgi`, :mod:`authmesh.sdk.django`, :mod:`authmesh.sdk.fastapi` and
:mod:`authmesh.sdk.aiohttp`; gRPC interceptors in :mod:`authmesh.sdk.grpc`; Redis nonce
stores in :mod:`authmesh.sdk.redis_nonce`; :func:`bootstrap_if_needed` pairs a fresh
machine from a token at start-up; :class:`VerificationMetrics` counts verification
outcomes (:class:`Outcome`) for Prometheus; any :class:`VerificationObserver` may replace it.

Names are imported lazily so a server needs no HTTP client library installed and a
client needs no web framework.

Errors: every failure a caller can receive from these names is an :class:`AuthMeshError`
(``code`` + one-sentence message): :class:`SigningError`, :class:`StoreError` (loading the
amesh home, e.g. ``AuthMeshAuth.from_home``), :class:`PairingError` (bootstrap) and
:class:`MissingExtraError` (an adapter imported without its extra installed).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authmesh.errors import AuthMeshError, MissingExtraError
    from authmesh.pairing import PairingError
    from authmesh.sdk._bootstrap import bootstrap_if_needed, bootstrap_if_needed_async
    from authmesh.sdk._client import AsyncClient, AuthMeshAuth, Client, SigningError
    from authmesh.sdk._metrics import Outcome, VerificationMetrics, VerificationObserver
    from authmesh.sdk._signing import RequestSigner
    from authmesh.sdk._verifier import Rejection, VerifiedDevice, Verifier
    from authmesh.sdk.aiohttp import AuthMeshAiohttpMiddleware, AuthMeshClientMiddleware
    from authmesh.sdk.asgi import AuthMeshMiddleware
    from authmesh.sdk.grpc import (
        AuthMeshAioServerInterceptor,
        AuthMeshClientInterceptor,
        AuthMeshServerInterceptor,
        CallSigner,
        aio_client_interceptors,
    )
    from authmesh.sdk.wsgi import AuthMeshWSGIMiddleware
    from authmesh.store import StoreError

__all__ = [
    "AsyncClient",
    "AuthMeshAioServerInterceptor",
    "AuthMeshAiohttpMiddleware",
    "AuthMeshAuth",
    "AuthMeshClientInterceptor",
    "AuthMeshClientMiddleware",
    "AuthMeshError",
    "AuthMeshMiddleware",
    "AuthMeshServerInterceptor",
    "AuthMeshWSGIMiddleware",
    "CallSigner",
    "Client",
    "MissingExtraError",
    "Outcome",
    "PairingError",
    "Rejection",
    "RequestSigner",
    "SigningError",
    "StoreError",
    "VerificationMetrics",
    "VerificationObserver",
    "VerifiedDevice",
    "Verifier",
    "aio_client_interceptors",
    "bootstrap_if_needed",
    "bootstrap_if_needed_async",
]

_HOMES = {
    "AuthMeshError": "authmesh.errors",
    "MissingExtraError": "authmesh.errors",
    "PairingError": "authmesh.pairing._errors",
    "StoreError": "authmesh.store._errors",
    "AsyncClient": "authmesh.sdk._client",
    "AuthMeshAuth": "authmesh.sdk._client",
    "Client": "authmesh.sdk._client",
    "SigningError": "authmesh.sdk._client",
    "AuthMeshMiddleware": "authmesh.sdk.asgi",
    "AuthMeshAiohttpMiddleware": "authmesh.sdk.aiohttp",
    "AuthMeshClientMiddleware": "authmesh.sdk.aiohttp",
    "AuthMeshAioServerInterceptor": "authmesh.sdk.grpc",
    "AuthMeshClientInterceptor": "authmesh.sdk.grpc",
    "AuthMeshServerInterceptor": "authmesh.sdk.grpc",
    "CallSigner": "authmesh.sdk.grpc",
    "aio_client_interceptors": "authmesh.sdk.grpc",
    "bootstrap_if_needed": "authmesh.sdk._bootstrap",
    "bootstrap_if_needed_async": "authmesh.sdk._bootstrap",
    "AuthMeshWSGIMiddleware": "authmesh.sdk.wsgi",
    "RequestSigner": "authmesh.sdk._signing",
    "Outcome": "authmesh.sdk._metrics",
    "VerificationMetrics": "authmesh.sdk._metrics",
    "VerificationObserver": "authmesh.sdk._metrics",
    "Rejection": "authmesh.sdk._verifier",
    "VerifiedDevice": "authmesh.sdk._verifier",
    "Verifier": "authmesh.sdk._verifier",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module 'authmesh.sdk' has no attribute {name!r}")
    return getattr(import_module(module), name)
