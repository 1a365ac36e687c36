"""gRPC: the signing interceptors against real grpcio servers (sync and grpc.aio) on
127.0.0.1 running the verifying interceptors, over generic bytes handlers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from authmesh.core._keys import PrivateKey
from authmesh.sdk._client import SigningError
from authmesh.sdk._grpc_call import CallSigner, MessageDigest
from authmesh.sdk._metrics import Outcome
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.grpc import (
    AuthMeshAioServerInterceptor,
    AuthMeshClientInterceptor,
    AuthMeshServerInterceptor,
    aio_client_interceptors,
    verified_device,
)
from tests.support.sdk import trusted_store, vector_key

K1, K2, K3 = vector_key("K1"), vector_key("K2"), vector_key("K3")
PROTOCOL_1_CONTROLLER = PrivateKey.generate()
AUTHORITY = "orders.test:50051"
UNARY, SERVER_STREAM = "/test.Echo/Unary", "/test.Echo/ServerStream"
CLIENT_STREAM, BIDI, HEALTH = "/test.Echo/ClientStream", "/test.Echo/Bidi", "/test.Echo/Health"
TIMEOUT = 10


def _tag(data: bytes) -> bytes:
    """What the handlers answer: the caller's id and the SHA-256 of what they got."""
    return f"{verified_device().device_id}:{hashlib.sha256(data).hexdigest()}".encode()


def unary(request: bytes, context: Any) -> bytes:
    return _tag(request)


def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
    yield _tag(request)
    yield request


def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
    return _tag(b"".join(requests))


def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for request in requests:
        yield _tag(request)


def health(request: bytes, context: Any) -> bytes:
    return b"ok"


async def aio_unary(request: bytes, context: Any) -> bytes:
    return _tag(request)


async def aio_server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield _tag(request)
    yield request


async def aio_client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return _tag(b"".join([request async for request in requests]))


async def aio_bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield _tag(request)


def _handlers(asynchronous: bool) -> grpc.GenericRpcHandler:
    if asynchronous:
        functions: tuple[Any, ...] = (aio_unary, aio_server_stream, aio_client_stream, aio_bidi)
    else:
        functions = (unary, server_stream, client_stream, bidi)
    return grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(functions[0]),
            "ServerStream": grpc.unary_stream_rpc_method_handler(functions[1]),
            "ClientStream": grpc.stream_unary_rpc_method_handler(functions[2]),
            "Bidi": grpc.stream_stream_rpc_method_handler(functions[3]),
            "Health": grpc.unary_unary_rpc_method_handler(health),
        },
    )


def _verifier(tmp_path: Path) -> Verifier:
    entries = [(K1, "controller", 2), (K3, "target", 1), (PROTOCOL_1_CONTROLLER, "controller", 1)]
    store = trusted_store(tmp_path / "home", entries)
    return Verifier(store, max_body_bytes=4096, authorities=[AUTHORITY])


@contextlib.contextmanager
def serving(interceptor: AuthMeshServerInterceptor) -> Iterator[str]:
    """A real sync grpcio server on 127.0.0.1 behind ``interceptor``; yields its address."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        handlers=[_handlers(asynchronous=False)],
        interceptors=[interceptor],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture
def sync_server(tmp_path: Path) -> Iterator[str]:
    with serving(
        AuthMeshServerInterceptor(_verifier(tmp_path), exempt_methods={HEALTH})
    ) as address:
        yield address


def _tag_for(key: PrivateKey, data: bytes) -> bytes:
    return f"{key.device_id}:{hashlib.sha256(data).hexdigest()}".encode()


def test_every_call_kind_is_signed_and_verified(sync_server: str) -> None:
    interceptor = AuthMeshClientInterceptor(CallSigner(K1, AUTHORITY))
    with grpc.insecure_channel(sync_server) as plain:
        channel = grpc.intercept_channel(plain, interceptor)
        assert channel.unary_unary(UNARY)(b"one", timeout=TIMEOUT) == _tag_for(K1, b"one")
        streamed = list(channel.unary_stream(SERVER_STREAM)(b"two", timeout=TIMEOUT))
        assert streamed == [_tag_for(K1, b"two"), b"two"]
        parts = iter([b"a", b"", b"bc"])
        assert channel.stream_unary(CLIENT_STREAM)(parts, timeout=TIMEOUT) == _tag_for(K1, b"abc")
        answers = list(channel.stream_stream(BIDI)(iter([b"x", b"y"]), timeout=TIMEOUT))
        assert answers == [_tag_for(K1, b"x"), _tag_for(K1, b"y")]
        assert plain.unary_unary(HEALTH)(b"", timeout=TIMEOUT) == b"ok"


def _refusal(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = call(*args, timeout=TIMEOUT, **kwargs)
        if not isinstance(result, bytes):
            list(result)
    return caught.value


def test_refusals(sync_server: str) -> None:
    signer = CallSigner(K1, AUTHORITY)
    with grpc.insecure_channel(sync_server) as channel:
        call = channel.unary_unary(UNARY)
        missing = _refusal(call, b"x")
        assert (missing.code(), missing.details()) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "missing_header",
        )

        signed_other = signer.metadata(UNARY, MessageDigest.of([b"other"]))
        forged = _refusal(call, b"x", metadata=signed_other)
        assert (forged.code(), forged.details()) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthorized",
        )
        trailing = dict(forged.trailing_metadata())
        assert trailing["x-authmesh-server-time"].isdigit()

        once = signer.metadata(UNARY, MessageDigest.of([b"x"]))
        assert call(b"x", metadata=once, timeout=TIMEOUT) == _tag_for(K1, b"x")
        assert _refusal(call, b"x", metadata=once).details() == "unauthorized"

        other_method = signer.metadata(SERVER_STREAM, MessageDigest.of([b"x"]))
        assert _refusal(call, b"x", metadata=other_method).details() == "unauthorized"

        for key in (K2, K3):  # unknown device; a target may not call
            metadata = CallSigner(key, AUTHORITY).metadata(UNARY, MessageDigest.of([b"x"]))
            assert _refusal(call, b"x", metadata=metadata).details() == "unauthorized"

        elsewhere = CallSigner(K1, "billing.test:50051").metadata(UNARY, MessageDigest.of([b"x"]))
        assert _refusal(call, b"x", metadata=elsewhere).details() == "unauthorized"

        unsigned_stream = _refusal(channel.unary_stream(SERVER_STREAM), b"x")
        assert unsigned_stream.details() == "missing_header"
        reordered = signer.metadata(BIDI, MessageDigest.of([b"x", b"y"]))
        bidi_call = channel.stream_stream(BIDI)
        forged_stream = _refusal(bidi_call, iter([b"y", b"x"]), metadata=reordered)
        assert forged_stream.details() == "unauthorized"

        too_large = signer.metadata(CLIENT_STREAM, MessageDigest.of([b"z" * 3000] * 2))
        stream = channel.stream_unary(CLIENT_STREAM)
        refused = _refusal(stream, iter([b"z" * 3000] * 2), metadata=too_large)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == "payload_too_large"


def test_http_and_grpc_signatures_do_not_cross(sync_server: str, tmp_path: Path) -> None:
    """An HTTP v2 signature over the same path, authority and bytes is no gRPC signature,
    and a gRPC signature is no HTTP one (domain separation)."""
    body = b"x"
    digest = hashlib.sha256(len(body).to_bytes(4, "big") + body).hexdigest()
    http_header = RequestSigner(K1, version="2").authorization("POST", UNARY, digest, AUTHORITY)
    metadata = (("authorization", http_header), ("x-authmesh-authority", AUTHORITY))
    with grpc.insecure_channel(sync_server) as channel:
        refused = _refusal(channel.unary_unary(UNARY), body, metadata=metadata)
        assert refused.details() == "unauthorized"
        v1 = RequestSigner(PROTOCOL_1_CONTROLLER).authorization("POST", UNARY, digest)
        refused = _refusal(channel.unary_unary(UNARY), body, metadata=(("authorization", v1),))
        assert refused.details() == "unsupported_version"

    grpc_header = dict(CallSigner(K1, AUTHORITY).metadata(UNARY, digest))["authorization"]
    http_verifier = Verifier(trusted_store(tmp_path / "http", [(K1, "controller", 2)]))
    for http_body in (body, len(body).to_bytes(4, "big") + body):
        with pytest.raises(Exception, match="401"):
            http_verifier.verify("POST", UNARY, grpc_header, AUTHORITY, http_body)


def test_client_refuses_what_it_cannot_sign(sync_server: str) -> None:
    interceptor = AuthMeshClientInterceptor(CallSigner(K1, AUTHORITY), max_body_bytes=8)
    with grpc.insecure_channel(sync_server) as plain:
        channel = grpc.intercept_channel(plain, interceptor)
        with pytest.raises(SigningError, match="larger than 8 bytes"):
            channel.stream_unary(CLIENT_STREAM)(iter([b"12345", b"6789"]), timeout=TIMEOUT)
        typed = channel.unary_unary(UNARY, request_serializer=str.encode)
        with pytest.raises(SigningError, match="type str"):
            typed("text", timeout=TIMEOUT)


@pytest.fixture
async def aio_server(tmp_path: Path) -> AsyncIterator[str]:
    interceptor = AuthMeshAioServerInterceptor(_verifier(tmp_path), exempt_methods={HEALTH})
    server = grpc.aio.server(handlers=[_handlers(asynchronous=True)], interceptors=[interceptor])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def test_aio_every_call_kind(aio_server: str) -> None:
    interceptors = aio_client_interceptors(CallSigner(K1, AUTHORITY))
    async with grpc.aio.insecure_channel(aio_server, interceptors=interceptors) as channel:
        assert await channel.unary_unary(UNARY)(b"one", timeout=TIMEOUT) == _tag_for(K1, b"one")
        call = channel.unary_stream(SERVER_STREAM)(b"two", timeout=TIMEOUT)
        assert [answer async for answer in call] == [_tag_for(K1, b"two"), b"two"]

        async def parts() -> AsyncIterator[bytes]:
            for part in (b"a", b"bc"):
                yield part

        stream = channel.stream_unary(CLIENT_STREAM)
        assert await stream(parts(), timeout=TIMEOUT) == _tag_for(K1, b"abc")
        bidi_call = channel.stream_stream(BIDI)(iter([b"x", b"y"]), timeout=TIMEOUT)
        assert [answer async for answer in bidi_call] == [_tag_for(K1, b"x"), _tag_for(K1, b"y")]


async def test_aio_refusals(aio_server: str) -> None:
    signer = CallSigner(K1, AUTHORITY)
    async with grpc.aio.insecure_channel(aio_server) as channel:
        call = channel.unary_unary(UNARY)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(b"x", timeout=TIMEOUT)
        assert missing.value.details() == "missing_header"
        once = signer.metadata(UNARY, MessageDigest.of([b"x"]))
        assert await call(b"x", metadata=once, timeout=TIMEOUT) == _tag_for(K1, b"x")
        with pytest.raises(grpc.aio.AioRpcError) as replay:
            await call(b"x", metadata=once, timeout=TIMEOUT)
        assert (replay.value.code(), replay.value.details()) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthorized",
        )
        streamed = signer.metadata(BIDI, MessageDigest.of([b"x", b"y"]))
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            answers = channel.stream_stream(BIDI)(iter([b"x", b"z"]), metadata=streamed)
            [answer async for answer in answers]
        assert forged.value.details() == "unauthorized"
        assert await channel.unary_unary(HEALTH)(b"", timeout=TIMEOUT) == b"ok"


@pytest.mark.parametrize(
    ("package", "name"),
    [("grpc", "AuthMeshServerInterceptor"), ("aiohttp", "AuthMeshClientMiddleware")],
)
def test_a_missing_extra_is_named(package: str, name: str) -> None:
    script = (
        f"import sys; sys.modules[{package!r}] = None\n"
        "import authmesh.sdk\n"
        f"try:\n    authmesh.sdk.{name}\n"
        "except ImportError as error:\n    print(error)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"pip install 'authmesh[{package}]'" in output


def test_a_stalled_request_stream_is_cut_off(tmp_path: Path) -> None:
    interceptor = AuthMeshServerInterceptor(_verifier(tmp_path), body_timeout_seconds=0.5)
    release = threading.Event()

    def stalled() -> Iterator[bytes]:
        yield b"first"
        release.wait(TIMEOUT)

    metadata = CallSigner(K1, AUTHORITY).metadata(CLIENT_STREAM, MessageDigest.of([b"first"]))
    with serving(interceptor) as address, grpc.insecure_channel(address) as channel:
        started = time.monotonic()
        try:
            refused = _refusal(channel.stream_unary(CLIENT_STREAM), stalled(), metadata=metadata)
        finally:
            release.set()
        assert refused.code() == grpc.StatusCode.CANCELLED
        assert time.monotonic() - started < TIMEOUT / 2


async def test_aio_stalled_request_stream_is_cut_off(tmp_path: Path) -> None:
    interceptor = AuthMeshAioServerInterceptor(_verifier(tmp_path), body_timeout_seconds=0.5)
    server = grpc.aio.server(handlers=[_handlers(asynchronous=True)], interceptors=[interceptor])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    release = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.wait_for(release.wait(), TIMEOUT)

    metadata = CallSigner(K1, AUTHORITY).metadata(CLIENT_STREAM, MessageDigest.of([b"first"]))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary(CLIENT_STREAM)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(stalled(), metadata=metadata, timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert refused.value.details() == "request_timeout"
    finally:
        release.set()
        await server.stop(grace=None)


def test_outcomes_reach_the_verifier_observer(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    class Recorder:
        def observe(self, outcome: Any, status: int, seconds: Any, version: Any) -> None:
            seen.append((str(outcome), status))

    verifier = _verifier(tmp_path)
    verifier.observer = Recorder()
    signer = CallSigner(K1, AUTHORITY)
    once = signer.metadata(UNARY, MessageDigest.of([b"x"]))
    forged = signer.metadata(UNARY, MessageDigest.of([b"other"]))
    interceptor = AuthMeshServerInterceptor(verifier)
    with serving(interceptor) as address, grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(UNARY)
        call(b"x", metadata=once, timeout=TIMEOUT)
        _refusal(call, b"x", metadata=once)
        _refusal(call, b"x", metadata=forged)
    assert seen == [("accepted", 200), ("replay", 401), ("bad_signature", 401)]


def test_a_stalled_request_stream_is_cancelled_and_counted(tmp_path: Path) -> None:
    """The sync server ends a blocked read by cancelling the call; the timeout used to go
    unreported to the verifier's observer."""
    outcomes: list[Outcome] = []

    class Observer:
        def observe(self, outcome: Outcome, *rest: Any) -> None:
            outcomes.append(outcome)

    verifier = _verifier(tmp_path)
    verifier.observer = Observer()
    release = threading.Event()

    def stalled() -> Iterator[bytes]:
        yield b"a"
        release.wait(TIMEOUT)  # the rest of the stream never comes in time

    interceptor = AuthMeshServerInterceptor(verifier, body_timeout_seconds=0.5)
    signed = CallSigner(K1, AUTHORITY).metadata(CLIENT_STREAM, MessageDigest.of([b"a", b"b"]))
    with serving(interceptor) as address, grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.stream_unary(CLIENT_STREAM)(stalled(), metadata=signed, timeout=TIMEOUT)
        release.set()
    assert caught.value.code() is grpc.StatusCode.CANCELLED
    assert outcomes == [Outcome.TIMEOUT]
