"""aiohttp: the signing client middleware against a real aiohttp server running the
verifying middleware on 127.0.0.1, refusals included, and the body handling of both."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from authmesh.core._canonical import body_sha256
from authmesh.sdk._client import AuthMeshAuth, SigningError
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import SERVER_TIME_HEADER, Verifier
from authmesh.sdk.aiohttp import (
    AUTHMESH_DEVICE,
    AuthMeshAiohttpMiddleware,
    AuthMeshClientMiddleware,
)
from tests.support.sdk import trusted_store, vector_key

K1, K2, K3 = vector_key("K1"), vector_key("K2"), vector_key("K3")
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def echo(request: web.Request) -> web.Response:
    device = request[AUTHMESH_DEVICE]
    body = await request.read()
    return web.json_response(
        {"device": device.device_id, "version": device.version, "sha": body_sha256(body)}
    )


async def form(request: web.Request) -> web.Response:
    fields = await request.post()
    return web.json_response({key: str(value) for key, value in fields.items()})


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/echo?hop=2")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def serve(verifier: Verifier, **options: float) -> AsyncIterator[str]:
    """A real aiohttp server on 127.0.0.1 behind the middleware; yields its base URL."""
    middleware = AuthMeshAiohttpMiddleware(verifier, {"/health"}, **options)
    app = web.Application(middlewares=[middleware])
    app.router.add_post("/echo", echo)
    app.router.add_get("/echo", echo)
    app.router.add_post("/form", form)
    app.router.add_get("/health", health)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _verifier(tmp_path: Path) -> Verifier:
    store = trusted_store(tmp_path / "home", [(K1, "controller", 1), (K3, "target", 1)])
    return Verifier(store, max_body_bytes=4096)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Verifier]]:
    verifier = _verifier(tmp_path)
    async with serve(verifier) as base:
        yield base, verifier


def signed_session(key: object = K1, **options: object) -> aiohttp.ClientSession:
    auth = AuthMeshAuth(key, **options)  # type: ignore[arg-type]
    return aiohttp.ClientSession(middlewares=(AuthMeshClientMiddleware(auth),), timeout=TIMEOUT)


async def test_signed_requests_carry_the_device_and_the_exact_body(
    server: tuple[str, Verifier],
) -> None:
    base, _ = server
    async with signed_session() as session:
        async with session.post(f"{base}/echo?b=2&a=1", json={"amount": 1}) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["device"] == K1.device_id
        assert answer["sha"] == body_sha256(json.dumps({"amount": 1}).encode())
        with pytest.raises(SigningError, match="normal form"):
            await session.get(f"{base}/echo?q=it's")  # aiohttp leaves the quote as it is
        async with session.get(URL(f"{base}/echo?q=it%27s", encoded=True)) as response:
            assert response.status == 200
        async with session.get(f"{base}/health") as response:
            assert await response.json() == {"ok": True}
        async with session.get(f"{base}/moved") as response:  # each hop is signed afresh
            assert (response.status, response.url.path) == (200, "/echo")


async def test_streamed_file_and_multipart_bodies_are_buffered_and_signed(
    server: tuple[str, Verifier],
) -> None:
    base, _ = server

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    async with signed_session() as session:
        async with session.post(f"{base}/echo", data=chunks()) as response:
            assert (await response.json())["sha"] == body_sha256(b"one,two,three")
        async with session.post(f"{base}/echo", data=io.BytesIO(b"file bytes")) as response:
            assert (await response.json())["sha"] == body_sha256(b"file bytes")
        upload = aiohttp.FormData()
        upload.add_field("name", "value")
        upload.add_field("file", b"content", filename="a.txt")
        async with session.post(f"{base}/echo", data=upload) as response:
            assert response.status == 200
        async with session.post(f"{base}/form", data={"x": "1", "y": "two"}) as response:
            assert await response.json() == {"x": "1", "y": "two"}


async def test_version_2_signs_the_host(server: tuple[str, Verifier]) -> None:
    base, _ = server
    async with (
        signed_session(version="2") as session,
        session.post(f"{base}/echo", data=b"v2") as response,
    ):
        assert (await response.json())["version"] == "2"


async def test_client_refuses_bodies_it_cannot_sign(server: tuple[str, Verifier]) -> None:
    base, _ = server
    async with signed_session(max_body_bytes=8) as session:
        with pytest.raises(SigningError, match="larger than 8 bytes"):
            await session.post(f"{base}/echo", data=b"x" * 9)

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 4

        with pytest.raises(SigningError, match="larger than 8 bytes"):
            await session.post(f"{base}/echo", data=endless())
        with pytest.raises(SigningError, match="compress"):
            await session.post(f"{base}/echo", data=b"x", compress="deflate")


async def _status(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, object], str | None]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json(), response.headers.get(SERVER_TIME_HEADER)


async def test_refusals(server: tuple[str, Verifier]) -> None:
    base, _ = server
    url = f"{base}/echo"
    signer = RequestSigner(K1)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as plain:
        assert (await _status(plain, url, {}))[:2] == (400, {"error": "missing_header"})
        malformed = {"Authorization": "AuthMesh v=1"}
        assert (await _status(plain, url, malformed))[:2] == (400, {"error": "malformed_header"})

        bad_signature = {"Authorization": signer.authorization("POST", "/echo", body_sha256(b"a"))}
        status, body, server_time = await _status(plain, url, bad_signature, b"b")
        assert (status, body) == (401, {"error": "unauthorized"})
        assert server_time is not None and server_time.isdigit()

        once = {"Authorization": signer.authorization("POST", "/echo", body_sha256(b"a"))}
        assert (await _status(plain, url, once, b"a"))[0] == 200
        assert (await _status(plain, url, once, b"a"))[:2] == (401, {"error": "unauthorized"})

        unknown = RequestSigner(K2).authorization("POST", "/echo", body_sha256(b""))
        assert (await _status(plain, url, {"Authorization": unknown}))[0] == 401
        target_role = RequestSigner(K3).authorization("POST", "/echo", body_sha256(b""))
        assert (await _status(plain, url, {"Authorization": target_role}))[0] == 401

        large = {"Authorization": signer.authorization("POST", "/echo", body_sha256(b"x" * 5000))}
        status, body, _ = await _status(plain, url, large, b"x" * 5000)
        assert (status, body) == (413, {"error": "payload_too_large"})


async def test_chunked_body_over_the_limit_is_refused(server: tuple[str, Verifier]) -> None:
    base, _ = server
    big = b"y" * 5000
    header = RequestSigner(K1).authorization("POST", "/echo", body_sha256(big))

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as plain,
        plain.post(f"{base}/echo", data=chunked(), headers={"Authorization": header}) as response,
    ):
        assert response.status == 413
        assert await response.json() == {"error": "payload_too_large"}


async def test_clock_hint_is_adopted_once(server: tuple[str, Verifier]) -> None:
    base, _ = server
    auth = AuthMeshAuth(K1, adopt_server_time=True)
    auth.signer.clock_offset = -120
    async with (
        aiohttp.ClientSession(
            middlewares=(AuthMeshClientMiddleware(auth),), timeout=TIMEOUT
        ) as session,
        session.post(f"{base}/echo", data=b"late") as response,
    ):
        assert response.status == 200
    assert abs(auth.signer.clock_offset) <= 2


async def test_a_stalled_body_gets_408(tmp_path: Path) -> None:
    header = RequestSigner(K1).authorization("POST", "/echo", body_sha256(b"0123456789"))
    async with serve(_verifier(tmp_path), body_timeout_seconds=0.5) as base:
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {header}\r\n"
                "Content-Length: 10\r\n\r\n01234"
            ).encode()
        )
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        elapsed = time.monotonic() - started
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert body == b'{"error":"request_timeout"}'
    assert elapsed < 5
