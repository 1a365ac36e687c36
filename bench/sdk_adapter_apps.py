"""The apps ``bench/sdk_adapters.py`` serves: two identical JSON POST routes per adapter.

``/guarded`` needs a valid AuthMesh signature, ``/open`` is exempt; both parse the
JSON body and answer a small JSON object, so their difference is what authmesh adds.
The allow list is read from ``$AMESH_BENCH_HOME`` (HMAC key: 32 zero bytes).

    uvicorn --app-dir bench sdk_adapter_apps:fastapi_app      (also starlette_app, asgi_app)
    gunicorn --chdir bench sdk_adapter_apps:flask_app          (also django_app)
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import path
from fastapi import Depends, FastAPI, Request
from flask import Flask, jsonify
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from authmesh.sdk._verifier import VerifiedDevice, Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.fastapi import verified_device
from authmesh.sdk.wsgi import AuthMeshWSGIMiddleware
from authmesh.store import AllowListStore, AmeshHome

EXEMPT = {"/open"}


def bench_verifier() -> Verifier:
    home = AmeshHome.from_env({"AUTH_MESH_DIR": os.environ["AMESH_BENCH_HOME"]})
    return Verifier(AllowListStore(home, bytes(32)))


def answer(order: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "item": order["item"]}


# FastAPI: the middleware plus the dependency on the guarded route.
fastapi_app = FastAPI()


@fastapi_app.post("/guarded")
async def fastapi_guarded(
    request: Request, device: Annotated[VerifiedDevice, Depends(verified_device)]
) -> dict[str, Any]:
    return answer(await request.json())


@fastapi_app.post("/open")
async def fastapi_open(request: Request) -> dict[str, Any]:
    return answer(await request.json())


fastapi_app.add_middleware(AuthMeshMiddleware, verifier=bench_verifier(), exempt_paths=EXEMPT)


# Starlette with the middleware.
async def starlette_route(request: Any) -> JSONResponse:
    return JSONResponse(answer(await request.json()))


starlette_app = Starlette(
    routes=[Route(p, starlette_route, methods=["POST"]) for p in ("/guarded", "/open")]
)
starlette_app.add_middleware(AuthMeshMiddleware, verifier=bench_verifier(), exempt_paths=EXEMPT)


# Raw ASGI: no framework at all.
async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = json.dumps(answer(json.loads(body))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


asgi_app = AuthMeshMiddleware(raw_asgi, verifier=bench_verifier(), exempt_paths=EXEMPT)


# Flask behind the WSGI middleware.
flask_app = Flask("bench")


@flask_app.post("/guarded")
@flask_app.post("/open")
def flask_route() -> Any:
    return jsonify(answer(flask_request.get_json()))


flask_app.wsgi_app = AuthMeshWSGIMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, bench_verifier(), exempt_paths=EXEMPT
)


# Django with only the authmesh middleware.
def django_route(request: HttpRequest) -> JsonResponse:
    return JsonResponse(answer(json.loads(request.body)))


urlpatterns = [path("guarded", django_route), path("open", django_route)]
settings.configure(
    DEBUG=False,
    SECRET_KEY="authmesh-bench-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["authmesh.sdk.django.AuthMeshMiddleware"],
    AUTHMESH_VERIFIER=bench_verifier,
    AUTHMESH_EXEMPT_PATHS=sorted(EXEMPT),
    USE_TZ=True,
)
django.setup()
django_app = WSGIHandler()
