"""FastAPI, Starlette and Flask wiring behind real servers: identity, mounts, exemptions."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from flask import Flask
from flask import request as flask_request
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from authmesh.sdk._client import AuthMeshAuth
from authmesh.sdk._verifier import VerifiedDevice, Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.fastapi import AuthMeshDependency, verified_device
from authmesh.sdk.wsgi import AuthMeshWSGIMiddleware
from tests.sdk.harness import uvicorn_server, wsgi_server
from tests.support.sdk import trusted_store, vector_key

K1, K3 = vector_key("K1"), vector_key("K3")


def _verifier(tmp_path: Path) -> Verifier:
    return Verifier(trusted_store(tmp_path / "home", [(K1, "controller", 1), (K3, "target", 1)]))


def test_fastapi_middleware_state_dependency_and_exempt_path(tmp_path: Path) -> None:
    app = FastAPI()

    @app.post("/orders")
    async def orders(
        request: Request, device: Annotated[VerifiedDevice, Depends(verified_device)]
    ) -> Any:
        assert request.state.authmesh is device
        return {"device": device.device_id, "body": (await request.body()).decode()}

    @app.get("/health")
    async def health() -> Any:
        return {"ok": True}

    app.add_middleware(AuthMeshMiddleware, verifier=_verifier(tmp_path), exempt_paths={"/health"})
    with uvicorn_server(app) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(auth=AuthMeshAuth(K1), timeout=10) as client:
            response = client.post(f"{base}/orders", content=b'{"amount": 1.0}')
        assert response.json() == {"device": K1.device_id, "body": '{"amount": 1.0}'}
        assert httpx.get(f"{base}/health", timeout=10).json() == {"ok": True}
        unsigned = httpx.post(f"{base}/orders", timeout=10)
        assert (unsigned.status_code, unsigned.json()) == (400, {"error": "missing_header"})
        target_role = httpx.post(f"{base}/orders", auth=AuthMeshAuth(K3), timeout=10)
        assert target_role.status_code == 401


def test_fastapi_dependency_without_middleware(tmp_path: Path) -> None:
    app = FastAPI()
    require_device = AuthMeshDependency(_verifier(tmp_path))

    @app.put("/items/{item}")
    async def put_item(
        item: str,
        request: Request,
        device: VerifiedDevice = Depends(require_device),  # noqa: B008 (local dependency)
    ) -> Any:
        return {"item": item, "device": device.device_id, "size": len(await request.body())}

    with uvicorn_server(app) as port:
        url = f"http://127.0.0.1:{port}/items/a%20b"
        response = httpx.put(url, content=b"x" * 10, auth=AuthMeshAuth(K1), timeout=10)
        assert response.json() == {"item": "a b", "device": K1.device_id, "size": 10}
        refused = httpx.put(url, content=b"x", timeout=10)
        assert (refused.status_code, refused.json()) == (400, {"detail": "missing_header"})


class Order(BaseModel):
    amount: float


def test_fastapi_dependency_on_a_route_with_a_body_parameter(tmp_path: Path) -> None:
    """FastAPI reads the body for a body parameter before it runs dependencies; the
    dependency must verify that body rather than wait for another one."""
    app = FastAPI()
    require_device = AuthMeshDependency(_verifier(tmp_path), body_timeout_seconds=5)

    @app.post("/orders")
    async def orders(
        order: Order,
        device: VerifiedDevice = Depends(require_device),  # noqa: B008 (local dependency)
    ) -> Any:
        return {"device": device.device_id, "amount": order.amount}

    with uvicorn_server(app) as port:
        url = f"http://127.0.0.1:{port}/orders"
        response = httpx.post(url, json={"amount": 2.5}, auth=AuthMeshAuth(K1), timeout=10)
        assert response.json() == {"device": K1.device_id, "amount": 2.5}
        unsigned = httpx.post(url, json={"amount": 2.5}, timeout=10)
        assert (unsigned.status_code, unsigned.json()) == (400, {"detail": "missing_header"})


def test_starlette_mount_keeps_the_signed_path(tmp_path: Path) -> None:
    """W6: the reference canonicalises the mount-relative path; we use the raw target."""

    async def orders(request: Any) -> JSONResponse:
        return JSONResponse({"path": request.url.path, "device": request.state.authmesh.device_id})

    inner = Starlette(routes=[Route("/orders", orders)])
    inner.add_middleware(AuthMeshMiddleware, verifier=_verifier(tmp_path))
    app = Starlette(routes=[Mount("/api", app=inner)])
    with uvicorn_server(app) as port:
        response = httpx.get(f"http://127.0.0.1:{port}/api/orders", auth=AuthMeshAuth(K1))
    assert response.status_code == 200
    assert response.json()["device"] == K1.device_id


def test_flask_mounted_under_a_prefix(tmp_path: Path) -> None:
    flask_app = Flask("mounted")

    @flask_app.post("/orders")
    def orders() -> Any:
        device = flask_request.environ["authmesh"]
        return {"device": device.device_id, "body": flask_request.get_data(as_text=True)}

    flask_app.wsgi_app = AuthMeshWSGIMiddleware(  # type: ignore[method-assign]
        flask_app.wsgi_app, _verifier(tmp_path)
    )
    app = DispatcherMiddleware(Flask("root"), {"/api": flask_app})
    with wsgi_server(app) as port:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/orders", content="héllo", auth=AuthMeshAuth(K1)
        )
    assert response.json() == {"device": K1.device_id, "body": "héllo"}


def _guarded_by_dependency(verifier: Verifier, body_timeout_seconds: float = 30.0) -> FastAPI:
    app = FastAPI()
    require_device = AuthMeshDependency(verifier, body_timeout_seconds)

    @app.post("/up")
    async def up(device: VerifiedDevice = Depends(require_device)) -> Any:  # noqa: B008
        return {"device": device.device_id}

    return app


def _stalling_middleware(verifier: Verifier) -> Any:
    async def never_called(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    return AuthMeshMiddleware(never_called, verifier=verifier, body_timeout_seconds=0.5)


@pytest.mark.parametrize("guard", ["middleware", "dependency"])
@pytest.mark.parametrize("sent", [b"xxxx", b""], ids=["part-of-the-body", "no-body-yet"])
def test_stalled_upload_gets_408(tmp_path: Path, sent: bytes, guard: str) -> None:
    # With no body byte yet, the first receive() is the one that waits. The dependency used
    # to wait for the body without any limit.
    verifier = _verifier(tmp_path)
    if guard == "middleware":
        app = _stalling_middleware(verifier)
        refused = b'{"error":"request_timeout"}'
    else:
        app = _guarded_by_dependency(verifier, body_timeout_seconds=0.5)
        refused = b'{"detail":"request_timeout"}'
    request = next(
        AuthMeshAuth(K1).sync_auth_flow(httpx.Request("POST", "http://h/up", content=b"x" * 10))
    )
    head = (
        f"POST /up HTTP/1.1\r\nHost: h\r\nAuthorization: {request.headers['authorization']}\r\n"
        "Content-Length: 10\r\nConnection: close\r\n\r\n"
    ).encode() + sent  # fewer than the 10 bytes announced, then silence
    with uvicorn_server(app) as port, socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408")
    assert answer.endswith(refused)


def test_websocket_routes_need_a_signed_handshake(tmp_path: Path) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.authmesh.device_id)
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    app.add_middleware(AuthMeshMiddleware, verifier=_verifier(tmp_path))
    with uvicorn_server(app) as port:
        url = f"ws://127.0.0.1:{port}/ws"
        signed = next(AuthMeshAuth(K1).sync_auth_flow(httpx.Request("GET", f"http://h:{port}/ws")))
        auth = {"Authorization": signed.headers["authorization"]}
        with connect(url, additional_headers=auth, open_timeout=10) as websocket:
            assert websocket.recv(timeout=10) == K1.device_id
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=10)
        assert refused.value.response.status_code == 403


def test_fastapi_dependencies_run_on_the_event_loop() -> None:
    """A plain ``def`` dependency is run in FastAPI's thread pool on every request."""
    assert inspect.iscoroutinefunction(verified_device)
    assert inspect.iscoroutinefunction(AuthMeshDependency.__call__)
