"""WSGI middleware (Flask, any WSGI app): ``app.wsgi_app = AuthMeshWSGIMiddleware(...)``.

The raw body is read once, bounded by ``max_body_bytes`` (413 before reading when
``Content-Length`` is larger), and handed on to the app as a fresh ``wsgi.input``.
The verified device is ``environ["authmesh"]`` (Flask: ``request.environ``).

The signed target is the original request-target: ``RAW_URI`` (gunicorn, werkzeug)
or ``REQUEST_URI`` (uWSGI, werkzeug). Servers that set neither (wsgiref) only give
the decoded path, which we re-encode — a client path containing ``%XX`` escapes of
unreserved characters will then not verify; use a server that keeps the raw URI.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from authmesh.sdk._rotation import ACK_HEADER
from authmesh.sdk._verifier import Rejection, Verifier

__all__ = ["AuthMeshWSGIMiddleware", "read_wsgi_body", "wsgi_request_target"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
_READ_CHUNK = 65536


def wsgi_request_target(environ: Environ) -> str:
    """The request-target as received, or the best reconstruction PEP 3333 allows."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    query = environ.get("QUERY_STRING", "")
    target = quote(path, safe="/;=,:@!$&'()*+~%")
    return f"{target}?{query}" if query else target


def read_wsgi_body(environ: Environ, verifier: Verifier) -> bytes:
    """Read the whole body, at most ``verifier.max_body_bytes``; raise 413 beyond."""
    declared = verifier.check_content_length(environ.get("CONTENT_LENGTH") or None)
    stream = environ["wsgi.input"]
    limit = verifier.max_body_bytes
    if declared is not None:
        remaining = declared
    elif environ.get("wsgi.input_terminated"):
        remaining = limit + 1  # chunked: read to the end, one byte past the limit at most
    else:
        return b""
    chunks: list[bytes] = []
    total = 0
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        remaining -= len(chunk)
        if total > limit:
            raise verifier.too_large()
    return b"".join(chunks)


def _respond(start_response: StartResponse, rejection: Rejection) -> list[bytes]:
    body = rejection.body
    headers = [*rejection.headers, ("Content-Length", str(len(body)))]
    start_response(f"{rejection.status} {HTTPStatus(rejection.status).phrase}", headers)
    return [body]


def _acknowledging(start_response: StartResponse, ack: str | None) -> StartResponse:
    """``start_response`` adding the key-rotation acknowledgement, if any."""
    if ack is None:
        return start_response

    def start_with_ack(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        return start_response(status, [*headers, (ACK_HEADER, ack)], *args)

    return start_with_ack


class AuthMeshWSGIMiddleware:
    """Verifies every request before ``app`` sees it; ``exempt_paths`` skip the check."""

    def __init__(
        self,
        app: WSGIApp,
        verifier: Verifier,
        exempt_paths: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        if verifier.nonce_store_is_async:
            raise TypeError(
                "WSGI needs a synchronous nonce store; pass RedisNonceStore, not the async one."
            )
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in self.exempt_paths:
            return self.app(environ, start_response)
        verifier = self.verifier
        try:
            pending = verifier.begin(
                environ.get("REQUEST_METHOD", ""),
                wsgi_request_target(environ),
                (environ.get("HTTP_AUTHORIZATION") or "").strip(" \t") or None,
                environ.get("HTTP_HOST"),
                environ.get("HTTP_X_AUTHMESH_ROTATION"),
            )
            body = read_wsgi_body(environ, verifier)
            device = verifier.finish(pending, body)
        except Rejection as rejection:
            return _respond(start_response, rejection)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["authmesh"] = device
        return self.app(environ, _acknowledging(start_response, device.rotation_ack))
