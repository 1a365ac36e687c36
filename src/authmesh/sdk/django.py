"""Django middleware: add ``"authmesh.sdk.django.AuthMeshMiddleware"`` to MIDDLEWARE.

Configure it with the setting ``AUTHMESH_VERIFIER``: a :class:`Verifier`, a callable
returning one, or the dotted path of either. Without the setting, the verifier is
built from the amesh home (``Verifier.from_home()``). Optional
``AUTHMESH_EXEMPT_PATHS`` lists paths served without a signature.

The verified device is ``request.authmesh``. The body is read raw (Django caches it,
so ``request.body`` and ``request.POST`` still work in views); ``Content-Length``
above the verifier's ``max_body_bytes`` is refused with 413 before reading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authmesh.errors import requires_extra

with requires_extra("django", "authmesh.sdk.django"):
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.utils.module_loading import import_string

from authmesh.sdk._rotation import ACK_HEADER
from authmesh.sdk._verifier import Rejection, Verifier
from authmesh.sdk.wsgi import read_wsgi_body

__all__ = ["AuthMeshMiddleware"]


def _configured_verifier() -> Verifier:
    configured: Any = getattr(settings, "AUTHMESH_VERIFIER", None)
    if isinstance(configured, str):
        configured = import_string(configured)
    if configured is None:
        return Verifier.from_home()
    if callable(configured) and not isinstance(configured, Verifier):
        configured = configured()
    if not isinstance(configured, Verifier):
        raise TypeError("settings.AUTHMESH_VERIFIER must be a Verifier or return one.")
    return configured


def _request_target(request: HttpRequest) -> str:
    meta = request.META
    raw = meta.get("RAW_URI") or meta.get("REQUEST_URI")
    return str(raw) if raw else request.get_full_path()


class AuthMeshMiddleware:
    """Verifies each request before the view; sets ``request.authmesh``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.verifier = _configured_verifier()
        if self.verifier.nonce_store_is_async:
            raise TypeError("Django needs a synchronous nonce store (RedisNonceStore).")
        self.exempt_paths = frozenset(getattr(settings, "AUTHMESH_EXEMPT_PATHS", ()))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in self.exempt_paths:
            return self.get_response(request)
        verifier = self.verifier
        meta = request.META
        try:
            pending = verifier.begin(
                meta.get("REQUEST_METHOD", ""),  # request.method is uppercased by Django
                _request_target(request),
                (meta.get("HTTP_AUTHORIZATION") or "").strip(" \t") or None,
                meta.get("HTTP_HOST"),
                meta.get("HTTP_X_AUTHMESH_ROTATION"),
            )
            if meta.get("wsgi.input_terminated") and not meta.get("CONTENT_LENGTH"):
                # Chunked upload: Django's own stream would read nothing; read it raw.
                body = read_wsgi_body(meta, verifier)
                request._body = body
            else:
                verifier.check_content_length(meta.get("CONTENT_LENGTH") or None)
                body = request.body
                if len(body) > verifier.max_body_bytes:
                    raise verifier.too_large()
            device = verifier.finish(pending, body)
        except Rejection as rejection:
            response = HttpResponse(rejection.body, status=rejection.status)
            for name, value in rejection.headers:
                response[name] = value
            return response
        request.authmesh = device
        # A verified request carries a signature made with the calling machine's key, which no
        # other site can produce: CSRF (a browser's ambient cookies) does not apply to it.
        request._dont_enforce_csrf_checks = True
        response = self.get_response(request)
        if device.rotation_ack is not None:
            response[ACK_HEADER] = device.rotation_ack
        return response
