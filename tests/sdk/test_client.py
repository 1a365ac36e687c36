"""The signing clients against a real uvicorn server running our ASGI middleware.

sdk.json ``client_fetch`` records what the reference client puts on the wire (fixed
clock and nonce): our httpx and requests clients, given the same inputs, must send
the same request-target, body and — signatures being deterministic — the very same
Authorization header, except where the reference is broken (W21: it signs
``String(Uint8Array)`` instead of the bytes it sends). Each recorded wire request is
also replayed into our middleware and must get the reference middleware's status.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from authmesh.core._b64 import b64url_encode
from authmesh.core._keys import PrivateKey
from authmesh.sdk._client import AuthMeshAuth, SigningError
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware, request_target
from tests.conformance.ledger import record
from tests.sdk.harness import build_request, send_raw, uvicorn_server
from tests.support.sdk import trusted_store, vector_key
from tests.support.vectorfiles import section

CLIENT_FETCH = section("sdk.json", "client_fetch")
K1 = vector_key("K1")


class Capture:
    """An ASGI app: our middleware in front of a handler that records what arrived."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.middleware: AuthMeshMiddleware | None = None

    def use(self, verifier: Verifier) -> None:
        self.middleware = AuthMeshMiddleware(self.handler, verifier=verifier)
        self.seen.clear()

    async def handler(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        body = message.get("body", b"")
        self.seen.append(
            {
                "method": scope["method"],
                "target": request_target(scope),
                "headers": [(k.decode(), v.decode("latin-1")) for k, v in scope["headers"]],
                "body": body,
                "device": scope["state"]["authmesh"],
            }
        )
        payload = json.dumps({"sha256": hashlib.sha256(body).hexdigest()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.middleware is not None
        await self.middleware(scope, receive, send)


@pytest.fixture(scope="module")
def capture() -> Iterator[tuple[Capture, int]]:
    app = Capture()
    with uvicorn_server(app) as port:
        yield app, port


def _verifier(tmp_path: Path, now: float | None = None, **options: Any) -> Verifier:
    store = trusted_store(tmp_path / "home", [(K1, "controller", 1)])
    if now is not None:
        options["clock"] = lambda: now
    return Verifier(store, **options)


def _fixed_auth(vector: dict[str, Any], **options: Any) -> AuthMeshAuth:
    nonce = b64url_encode(bytes.fromhex(vector["input"]["nonce_bytes_hex"]))
    signer = RequestSigner(K1, clock=lambda: vector["now"] + 0.4, nonce=lambda: nonce)
    return AuthMeshAuth(signer, **options)


def _httpx_arguments(vector: dict[str, Any], port: int) -> dict[str, Any]:
    init = vector["input"]["init"] or {}
    arguments: dict[str, Any] = {
        "method": init.get("method", "GET"),
        "url": vector["input"]["url"].replace("PORT", str(port)),
        "headers": init.get("headers", {}),
    }
    body = init.get("body")
    if body is None:
        return arguments
    if body["type"] == "string":
        arguments["content"] = body["value"]
    elif body["type"] == "Uint8Array":
        arguments["content"] = bytes.fromhex(body["hex"])
    else:  # URLSearchParams
        arguments["data"] = dict(body["entries"])
    return arguments


def _expect_like_reference(vector: dict[str, Any], seen: dict[str, Any]) -> None:
    wire = vector["wire"]
    assert seen["method"] == wire["method"]
    assert seen["target"] == wire["target"]
    assert seen["body"] == bytes.fromhex(wire["body_hex"])
    authorization = dict(seen["headers"])["authorization"]
    if vector["name"] == "uint8array_body_bug":
        # W21: the reference signs "0,255,128"; we sign the three bytes we send.
        assert authorization != vector["authorization"]
    else:
        assert authorization == vector["authorization"]
    assert [k for k, _ in seen["headers"]].count("authorization") == 1


@pytest.mark.parametrize(
    ("index", "vector"), list(enumerate(CLIENT_FETCH["vectors"])), ids=lambda v: str(v)[:40]
)
def test_client_fetch_vectors(
    capture: tuple[Capture, int], index: int, vector: dict[str, Any], tmp_path: Path
) -> None:
    app, port = capture
    app.use(_verifier(tmp_path, now=vector["now"] + 0.25))
    assert CLIENT_FETCH["key"]["public_key_b64"] == K1.public_key_b64

    with httpx.Client(auth=_fixed_auth(vector), timeout=10) as client:
        response = client.request(**_httpx_arguments(vector, port))
    assert response.status_code == 200  # ours verifies, uint8array included (W21)
    _expect_like_reference(vector, app.seen[-1])

    # The same inputs through requests (fresh verifier: the nonce is fixed).
    app.use(_verifier(tmp_path / "requests", now=vector["now"] + 0.25))
    arguments = _httpx_arguments(vector, port)
    content = arguments.pop("content", None)
    response = requests.request(
        arguments.pop("method"),
        arguments.pop("url"),
        data=content if content is not None else arguments.pop("data", None),
        headers=arguments.pop("headers"),
        auth=_fixed_auth(vector),
        timeout=10,
    )
    assert response.status_code == 200
    seen = app.seen[-1]
    wire = vector["wire"]
    assert (seen["method"], seen["target"]) == (wire["method"], wire["target"])
    assert seen["body"] == bytes.fromhex(wire["body_hex"])
    if vector["name"] not in ("uint8array_body_bug",):
        assert dict(seen["headers"])["authorization"] == vector["authorization"]

    # The reference client's own bytes, replayed into our middleware.
    app.use(_verifier(tmp_path / "replay", now=vector["now"] + 0.25))
    headers = [("Host", f"127.0.0.1:{port}"), *map(tuple, wire["headers"])]
    headers = [h for h in headers if h[0] != "Content-Length"]
    raw = build_request(wire["method"], wire["target"], headers, bytes.fromhex(wire["body_hex"]))
    assert send_raw(port, raw).status == vector["reference_middleware_status"]
    record("sdk.json", "client_fetch.vectors", index)


def test_streams_files_and_generators_are_buffered_and_verified(
    capture: tuple[Capture, int], tmp_path: Path
) -> None:
    app, port = capture
    app.use(_verifier(tmp_path))
    auth = AuthMeshAuth(K1)
    url = f"http://127.0.0.1:{port}/upload"
    payload = bytes(range(256)) * 40

    def generator() -> Iterator[bytes]:
        yield payload[:1000]
        yield payload[1000:]

    with httpx.Client(auth=auth, timeout=10) as client:
        assert client.post(url, content=generator()).json()["sha256"] == (
            hashlib.sha256(payload).hexdigest()
        )
        files = client.post(url, files={"f": ("blob.bin", payload)})
        assert files.status_code == 200
        assert app.seen[-1]["body"].count(payload) == 1

    async def agenerator() -> AsyncIterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    async def send_async() -> httpx.Response:
        async with httpx.AsyncClient(auth=auth, timeout=10) as client:
            return await client.put(url, content=agenerator())

    assert asyncio.run(send_async()).json()["sha256"] == hashlib.sha256(payload).hexdigest()

    path = tmp_path / "upload.bin"
    path.write_bytes(payload)
    with path.open("rb") as handle:
        response = requests.post(url, data=handle, auth=auth, timeout=10)
    assert response.json()["sha256"] == hashlib.sha256(payload).hexdigest()
    response = requests.post(url, data=iter([payload[:5], payload[5:]]), auth=auth, timeout=10)
    assert response.json()["sha256"] == hashlib.sha256(payload).hexdigest()


def test_oversized_streams_are_refused_before_sending(
    capture: tuple[Capture, int], tmp_path: Path
) -> None:
    app, port = capture
    app.use(_verifier(tmp_path))
    auth = AuthMeshAuth(K1, max_body_bytes=100)
    url = f"http://127.0.0.1:{port}/upload"
    with httpx.Client(auth=auth, timeout=10) as client, pytest.raises(SigningError) as caught:
        client.post(url, content=iter([b"x" * 60, b"y" * 60]))
    assert "larger than 100 bytes" in str(caught.value)
    with pytest.raises(SigningError):
        requests.post(url, data=iter([b"x" * 101]), auth=auth, timeout=10)
    assert app.seen == []


def test_paths_are_sent_exactly_as_signed(capture: tuple[Capture, int], tmp_path: Path) -> None:
    app, port = capture
    app.use(_verifier(tmp_path))
    auth = AuthMeshAuth(K1)
    url = f"http://127.0.0.1:{port}/p/{{x}}^/./a/../b%7e?q=a b&z=~&a=1"
    with httpx.Client(auth=auth, timeout=10) as client:
        assert client.get(url).status_code == 200
    # ^ encoded (Node and Bun servers agree), dot segments resolved, %7e kept.
    assert app.seen[-1]["target"] == "/p/%7Bx%7D%5E/b%7e?q=a%20b&z=~&a=1"
    # requests re-quotes the URL (%7e -> ~) while preparing it, before auth runs; we
    # sign what it then sends, so the request still verifies.
    assert requests.get(url, auth=auth, timeout=10).status_code == 200
    assert app.seen[-1]["target"] == "/p/%7Bx%7D%5E/b~?q=a%20b&z=~&a=1"


def test_version_2_binds_the_authority(capture: tuple[Capture, int], tmp_path: Path) -> None:
    app, port = capture
    authority = f"127.0.0.1:{port}"
    store = trusted_store(tmp_path / "home", [(K1, "controller", 2)])
    app.use(Verifier(store, authorities=[authority]))
    v1, v2 = AuthMeshAuth(K1), AuthMeshAuth(K1, version="2")
    url = f"http://{authority}/v2"
    with httpx.Client(timeout=10) as client:
        assert client.get(url, auth=v2).status_code == 200
        assert app.seen[-1]["device"].version == "2"
        # A peer recorded as v2 is refused when it signs v1 (no downgrade).
        assert client.get(url, auth=v1).status_code == 401
        # Signed for another authority: refused even with a matching Host header.
        signed = client.build_request("GET", url, headers={"Host": "other.example"})
        flow = v2.sync_auth_flow(signed)
        assert client.send(next(flow)).status_code == 401
    assert requests.get(url, auth=v2, timeout=10).status_code == 200


def test_v1_only_peers_may_still_use_v2(capture: tuple[Capture, int], tmp_path: Path) -> None:
    app, port = capture
    app.use(_verifier(tmp_path))
    url = f"http://127.0.0.1:{port}/x"
    with httpx.Client(timeout=10) as client:
        assert client.get(url, auth=AuthMeshAuth(K1)).status_code == 200
        assert client.get(url, auth=AuthMeshAuth(K1, version="2")).status_code == 200


def test_clock_hint_lets_a_skewed_client_recover(
    capture: tuple[Capture, int], tmp_path: Path
) -> None:
    app, port = capture
    now = 1_800_000_000
    app.use(_verifier(tmp_path, now=now))
    skewed = RequestSigner(K1, clock=lambda: now - 120)
    url = f"http://127.0.0.1:{port}/x"
    with httpx.Client(timeout=10) as client:
        assert client.get(url, auth=AuthMeshAuth(skewed)).status_code == 401
        assert client.get(url, auth=AuthMeshAuth(skewed, adopt_server_time=True)).status_code == 200
    assert skewed.clock_offset == 120
    # A hint beyond five minutes is ignored: a lying server cannot post-date our requests.
    assert not RequestSigner(K1, clock=lambda: now).learn_server_time(str(now + 3600))


def test_unknown_key_gets_401_with_server_time(
    capture: tuple[Capture, int], tmp_path: Path
) -> None:
    app, port = capture
    app.use(_verifier(tmp_path, now=1_800_000_000))
    stranger = RequestSigner(PrivateKey.generate(), clock=lambda: 1_800_000_000)
    response = httpx.get(f"http://127.0.0.1:{port}/x", auth=AuthMeshAuth(stranger), timeout=10)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["x-authmesh-server-time"] == "1800000000"
