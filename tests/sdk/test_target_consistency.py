"""Property: what the verifier accepts, the framework reads as signed.

For hostile request-targets (dot segments, ``%2e``, backslashes, ``%2F``, invalid
UTF-8 escapes, ``+``, ``;``, empty query pieces, fragments...) signed the way a
client signs them, each framework behind its real server either refuses the request
or hands the application exactly the signed path and query: the path is the signed
path percent-decoded, the query items are the signed (sorted, re-serialised) query's
items, compared stably sorted by name as the canonical string sorts them.

Each framework is one entry of :data:`FRAMEWORKS`: a function that serves an app
behind the adapter with the given verifier and yields the port. The app answers
200 with ``{"path": <the path it reads>, "query": [[name, value], ...]}``. Another
adapter is tested by adding its entry.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import unquote, unquote_plus

import pytest
from aiohttp import web
from fastapi import Depends, FastAPI, Request
from flask import Flask
from flask import request as flask_request
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from authmesh.core._canonical import EMPTY_BODY_SHA256, request_target_path, sort_query
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.aiohttp import AuthMeshAiohttpMiddleware
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.fastapi import AuthMeshDependency
from authmesh.sdk.wsgi import AuthMeshWSGIMiddleware
from tests.sdk import apps
from tests.sdk.harness import build_request, send_raw, uvicorn_server, wsgi_server
from tests.support.sdk import trusted_store, vector_key

K1 = vector_key("K1")
Serve = Callable[[Verifier], AbstractContextManager[int]]


def _report(path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
    return {"path": path, "query": [list(item) for item in query]}


@contextmanager
def serve_starlette(verifier: Verifier) -> Iterator[int]:
    async def report(request: Any) -> JSONResponse:
        return JSONResponse(_report(request.scope["path"], request.query_params.multi_items()))

    app = Starlette(routes=[Route("/{rest:path}", report)])
    app.add_middleware(AuthMeshMiddleware, verifier=verifier)
    with uvicorn_server(app) as port:
        yield port


@contextmanager
def serve_fastapi(verifier: Verifier) -> Iterator[int]:
    app = FastAPI()
    require_device = AuthMeshDependency(verifier)

    @app.get("/{rest:path}", dependencies=[Depends(require_device)])
    async def report(rest: str, request: Request) -> Any:
        return _report("/" + rest, request.query_params.multi_items())

    with uvicorn_server(app) as port:
        yield port


@contextmanager
def serve_flask(verifier: Verifier) -> Iterator[int]:
    app = Flask("consistency")

    @app.get("/", defaults={"rest": ""})
    @app.get("/<path:rest>")
    def report(rest: str) -> Any:
        return _report(flask_request.path, list(flask_request.args.items(multi=True)))

    app.wsgi_app = AuthMeshWSGIMiddleware(app.wsgi_app, verifier)  # type: ignore[method-assign]
    with wsgi_server(app) as port:
        yield port


@contextmanager
def serve_django(verifier: Verifier) -> Iterator[int]:
    dispatcher = apps.DjangoDispatcher()  # its view reports request.path and request.GET
    dispatcher.use(verifier)
    with wsgi_server(dispatcher) as port:
        yield port


@contextmanager
def serve_aiohttp(verifier: Verifier) -> Iterator[int]:
    async def report(request: web.Request) -> web.Response:
        return web.json_response(_report(request.path, list(request.query.items())))

    app = web.Application(middlewares=[AuthMeshAiohttpMiddleware(verifier)])
    app.router.add_route("GET", "/{rest:.*}", report)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port: int = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


FRAMEWORKS: dict[str, Serve] = {
    "aiohttp": serve_aiohttp,
    "starlette": serve_starlette,
    "fastapi": serve_fastapi,
    "flask": serve_flask,
    "django": serve_django,
}

# Pieces chosen for the ways servers and frameworks are known to read targets apart.
PATH_PIECES = [
    "a", "B", "..", ".", "%2e", "%2E%2e", ".%2e", "%2F", "%2f", "\\", "%5C", "/", "//",
    "%FF", "%FE", "%C3%A9", "%E2%82%AC", "%C3", "+", ";", ";x=1", "%20", "%00", "~",
    "%7e", "@", ":", "!", "$", "'", "(", "*", ",", "=", "&", "^", "{", "}", "|", "`",
    "%", "%3F", "%23", "%25", "#", "#f",
]  # fmt: skip
QUERY_PIECES = [
    "a", "b", "=", "&", "&&", "+", "%20", "%2B", "%FE", "%FF", "%C3%A9", "%C3", "%26",
    "%3D", ";", "?", "#", "'", "%27", "%00", "%", "A", "%41", "~", "/", "..",
]  # fmt: skip

targets = st.builds(
    lambda path, question, query: "/" + "".join(path) + (question + "".join(query)),
    st.lists(st.sampled_from(PATH_PIECES), max_size=6),
    st.sampled_from(["", "?"]),
    st.lists(st.sampled_from(QUERY_PIECES), max_size=8),
)


def _utf16(item: tuple[str, str]) -> bytes:
    return item[0].encode("utf-16-be", "surrogatepass")


def signed_view(target: str) -> tuple[str, list[tuple[str, str]]]:
    """(decoded path, query items) of the canonical path a signer signs for ``target``."""
    path, _, query = sort_query(request_target_path(target)).partition("?")
    items = []
    for piece in query.split("&") if query else []:
        name, _, value = piece.partition("=")
        items.append((unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict")))
    return unquote(path, errors="strict"), items


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    home = tmp_path_factory.mktemp("home") / "home"
    verifier = Verifier(trusted_store(home, [(K1, "controller", 1)]))
    with FRAMEWORKS[request.param](verifier) as port:
        yield port


def _send(port: int, target: str) -> Any:
    header = RequestSigner(K1).authorization("GET", target, EMPTY_BODY_SHA256)
    request = build_request("GET", target, [("Host", "127.0.0.1"), ("Authorization", header)], b"")
    return send_raw(port, request)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(targets)
@example("/admin/../public")
@example("/admin/%2e%2e/public")
@example("/files/a\\b")
@example("/x?q=%FF")
@example("/x?q=a#frag")
@example("/x?")
@example("/a%2Fb?=x&&y&a+b=%2B")
def test_the_app_reads_what_was_signed(served: int, target: str) -> None:
    response = _send(served, target)
    event(f"status {response.status}")
    if response.status != 200:
        return  # refused by the verifier or the server: nothing to read differently
    seen = json.loads(response.body)
    path, query = signed_view(target)
    assert seen["path"] == path
    assert sorted((tuple(item) for item in seen["query"]), key=_utf16) == query
