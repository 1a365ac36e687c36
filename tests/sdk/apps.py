"""Small protected apps for each adapter: they echo who signed and what body arrived."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import re_path
from flask import Flask, jsonify, request
from starlette.requests import Request

from authmesh.sdk._verifier import Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.wsgi import AuthMeshWSGIMiddleware

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"]


def echo(device: Any, body: bytes) -> dict[str, Any]:
    return {
        "ok": True,
        "authMesh": device.as_dict(),
        "bodySha256": hashlib.sha256(body).hexdigest(),
    }


class Swappable:
    """Holds the verifier of the current test; each adapter is rebuilt around it."""

    verifier: Verifier | None = None


CURRENT = Swappable()


# ASGI: a bare ASGI app reading the identity the way Starlette exposes it.
async def asgi_echo(scope: Any, receive: Any, send: Any) -> None:
    request = Request(scope, receive)
    body = await request.body()
    payload = json.dumps(echo(request.state.authmesh, body)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class AsgiDispatcher:
    def __init__(self) -> None:
        self.app: Any = None

    def use(self, verifier: Verifier) -> None:
        self.app = AuthMeshMiddleware(asgi_echo, verifier=verifier)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


# Flask behind the WSGI middleware.
flask_app = Flask("authmesh_test")


@flask_app.route("/", defaults={"rest": ""}, methods=ALL_METHODS)
@flask_app.route("/<path:rest>", methods=ALL_METHODS)
def flask_echo(rest: str) -> Any:
    return jsonify(echo(request.environ["authmesh"], request.get_data()))


class WsgiDispatcher:
    def __init__(self) -> None:
        self.app: Any = None

    def use(self, verifier: Verifier) -> None:
        self.app = AuthMeshWSGIMiddleware(flask_app.wsgi_app, verifier)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


# Django: settings once per process; the middleware picks up CURRENT.verifier.
def django_echo(request: HttpRequest) -> JsonResponse:
    """The echo, plus the path and query items as Django reads them."""
    query = [[name, value] for name, values in request.GET.lists() for value in values]
    return JsonResponse(
        {**echo(request.authmesh, request.body), "path": request.path, "query": query}  # type: ignore[attr-defined]
    )


urlpatterns = [re_path(r"^.*$", django_echo)]


def configure_django() -> None:
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="authmesh-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.sdk.apps",
        MIDDLEWARE=["authmesh.sdk.django.AuthMeshMiddleware"],
        AUTHMESH_VERIFIER=lambda: CURRENT.verifier,
        USE_TZ=True,
    )
    django.setup()


class DjangoDispatcher:
    def __init__(self) -> None:
        configure_django()
        self.app: Any = None

    def use(self, verifier: Verifier) -> None:
        CURRENT.verifier = verifier
        self.app = WSGIHandler()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)
