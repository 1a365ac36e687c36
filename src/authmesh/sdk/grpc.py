"""gRPC interceptors (``authmesh[grpc]``): sign every call on the client, verify it on the server.

Sync and ``grpc.aio``, unary and streaming. The signature covers the method path, the
authority the client addressed and the request messages' bytes (the canonical form is
in :mod:`authmesh.sdk._grpc_call` and docs/protocol.md §10):

* client: requests must be ``bytes`` (generic stubs without a serializer) or objects
  with ``SerializeToString`` (protobuf messages), whose bytes are what the stub's
  serializer sends. A request stream is read whole (at most ``max_body_bytes``) before
  the call starts, signed, and sent from the buffer;
* server: the interceptor takes the raw request bytes from gRPC (the handler's
  deserializer is applied after verification), so it hashes exactly what arrived. A
  request stream is read whole (bounded) and verified before the handler runs; the
  handler then iterates the buffered messages. Calls whose requests depend on earlier
  responses (interactive bidirectional streams) cannot be signed this way.

Refusals abort the call: ``UNAUTHENTICATED`` with the reference error code as details
(``missing_header``, ``unauthorized`` ...; a 401 also sets the trailing metadata
``x-authmesh-server-time``), ``RESOURCE_EXHAUSTED`` for ``payload_too_large``,
``DEADLINE_EXCEEDED`` for a request stream not complete in time (``grpc.aio``; the sync
server can end a blocked read only by cancelling the call, so its client sees ``CANCELLED``;
both report the timeout to the verifier's observer), ``INTERNAL`` when the
allow list or the nonce store fails. The verified caller is
:func:`verified_device` (a context variable set for the handler's call).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, NamedTuple

from authmesh.errors import requires_extra

with requires_extra("grpc", "authmesh.sdk.grpc"):
    import grpc
    import grpc.aio

from authmesh.sdk._client import SigningError, _too_large
from authmesh.sdk._grpc_call import (
    AUTHORIZATION_METADATA,
    SERVER_TIME_METADATA,
    CallSigner,
    CallVerifier,
    MessageDigest,
)
from authmesh.sdk._verifier import DEFAULT_MAX_BODY_BYTES, Rejection, VerifiedDevice, Verifier
from authmesh.sdk.asgi import BODY_TIMEOUT_SECONDS

__all__ = [
    "AuthMeshAioServerInterceptor",
    "AuthMeshClientInterceptor",
    "AuthMeshServerInterceptor",
    "CallSigner",
    "aio_client_interceptors",
    "verified_device",
]

_DEVICE: contextvars.ContextVar[VerifiedDevice] = contextvars.ContextVar("authmesh_grpc_device")
_STATUS = {
    400: grpc.StatusCode.UNAUTHENTICATED,
    401: grpc.StatusCode.UNAUTHENTICATED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def verified_device() -> VerifiedDevice:
    """The caller of the call being handled; a LookupError outside a verified call."""
    return _DEVICE.get()


# Client ----------------------------------------------------------------------------


def _request_bytes(request: Any) -> bytes:
    if isinstance(request, bytes):
        return request
    serialize = getattr(request, "SerializeToString", None)
    if serialize is None:
        raise SigningError(
            f"A gRPC request of type {type(request).__name__} cannot be signed; "
            "send bytes or a protobuf message."
        )
    data: bytes = serialize()
    return data


class _Requests:
    """A call's requests as they are collected to be signed: kept, hashed and bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[Any] = []
        self.digest = MessageDigest()

    def add(self, request: Any) -> None:
        self.digest.add(_request_bytes(request))
        if self.digest.size > self.limit:
            raise _too_large(self.limit)
        self.items.append(request)


class _ClientSigning:
    """What the client interceptors share: the signer and the body bound."""

    def __init__(self, signer: CallSigner, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.signer = signer
        self.max_body_bytes = max_body_bytes

    def _collect(self, requests: Iterable[Any]) -> _Requests:
        collected = _Requests(self.max_body_bytes)
        for request in requests:
            collected.add(request)
        return collected

    def _metadata(self, details: Any, collected: _Requests) -> list[Any]:
        kept = [item for item in details.metadata or () if item[0] != AUTHORIZATION_METADATA]
        messages_hash = collected.digest.hexdigest()
        return [*kept, *self.signer.metadata(_method(details), messages_hash)]


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def _with_metadata(details: Any, metadata: list[Any]) -> grpc.ClientCallDetails:
    return _SyncCallDetails(
        details.method,
        details.timeout,
        metadata,
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class _SyncCallDetails(_CallDetails, grpc.ClientCallDetails):
    """``grpc.ClientCallDetails`` is an interface without a constructor."""


def _method(details: Any) -> str:
    method = details.method
    return method.decode("ascii") if isinstance(method, bytes) else str(method)


class AuthMeshClientInterceptor(
    _ClientSigning,
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """``grpc.intercept_channel(channel, AuthMeshClientInterceptor(CallSigner.from_home(...)))``.

    One object serves the four call kinds of a sync channel.
    """

    def _unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = self._metadata(details, self._collect((request,)))
        return continuation(_with_metadata(details, metadata), request)

    def _stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        collected = self._collect(requests)
        metadata = self._metadata(details, collected)
        return continuation(_with_metadata(details, metadata), iter(collected.items))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._unary(continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._unary(continuation, details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._stream(continuation, details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._stream(continuation, details, requests)


class _AioSigning(_ClientSigning):
    def _details(self, details: Any, collected: _Requests) -> Any:
        metadata = self._metadata(details, collected)
        return details._replace(metadata=grpc.aio.Metadata(*metadata))

    async def _unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details, self._collect((request,))), request)

    async def _stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        if isinstance(requests, AsyncIterable):
            collected = _Requests(self.max_body_bytes)
            async for request in requests:
                collected.add(request)
        else:
            collected = self._collect(requests)
        return await continuation(self._details(details, collected), iter(collected.items))


# grpc.aio registers an interceptor object under one call kind only: one class per kind.
class _AioUnaryUnary(_AioSigning, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._unary(continuation, details, request)


class _AioUnaryStream(_AioSigning, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._unary(continuation, details, request)


class _AioStreamUnary(_AioSigning, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._stream(continuation, details, requests)


class _AioStreamStream(_AioSigning, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._stream(continuation, details, requests)


def aio_client_interceptors(
    signer: CallSigner, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> list[grpc.aio.ClientInterceptor]:
    """``grpc.aio.insecure_channel(target, interceptors=aio_client_interceptors(signer))``.

    grpc.aio takes one interceptor object per call kind, hence a list of four.
    """
    kinds = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
    return [kind(signer, max_body_bytes=max_body_bytes) for kind in kinds]


# Server ----------------------------------------------------------------------------


def _abort_arguments(rejection: Rejection, context: Any) -> tuple[grpc.StatusCode, str]:
    if rejection.server_time is not None:
        context.set_trailing_metadata(((SERVER_TIME_METADATA, str(rejection.server_time)),))
    return _STATUS.get(rejection.status, grpc.StatusCode.INTERNAL), rejection.error


def _deserializer(handler: grpc.RpcMethodHandler[Any, Any]) -> Callable[[bytes], Any]:
    deserialize = handler.request_deserializer
    return deserialize if deserialize is not None else (lambda data: data)


class AuthMeshServerInterceptor(grpc.ServerInterceptor):
    """``grpc.server(executor, interceptors=[AuthMeshServerInterceptor(verifier)])``.

    ``exempt_methods``: full method paths (e.g. the health service's) served unsigned.
    ``body_timeout_seconds``: a request stream not complete by then is cancelled
    (``CANCELLED``; the timeout is reported to the verifier's observer).
    """

    def __init__(
        self,
        verifier: Verifier,
        exempt_methods: Iterable[str] = (),
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        if verifier.nonce_store_is_async:
            raise TypeError(
                "A synchronous gRPC server needs a synchronous nonce store; "
                "pass RedisNonceStore, not the async one."
            )
        self.calls = CallVerifier(verifier)
        self.exempt_methods = frozenset(exempt_methods)
        self.body_timeout_seconds = body_timeout_seconds

    def _verify(self, details: Any, messages: Iterable[bytes], context: Any) -> VerifiedDevice:
        try:
            pending = self.calls.begin(details.method, details.invocation_metadata)
            digest = MessageDigest()
            for message in messages:
                self.calls.take(digest, message)
            return self.calls.finish(pending, digest.hexdigest())
        except Rejection as rejection:
            context.abort(*_abort_arguments(rejection, context))
            raise  # abort raises; this line only tells type checkers so

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method in self.exempt_methods:
            return handler
        deserialize = _deserializer(handler)
        if handler.unary_unary is not None:

            def unary_unary(data: bytes, context: Any) -> Any:
                token = _DEVICE.set(self._verify(details, (data,), context))
                try:
                    return handler.unary_unary(deserialize(data), context)
                finally:  # pool threads serve other calls next
                    _DEVICE.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:

            def unary_stream(data: bytes, context: Any) -> Iterator[Any]:
                token = _DEVICE.set(self._verify(details, (data,), context))
                try:
                    yield from handler.unary_stream(deserialize(data), context)
                finally:
                    _DEVICE.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, response_serializer=handler.response_serializer
            )
        if handler.stream_unary is not None:

            def stream_unary(requests: Iterator[bytes], context: Any) -> Any:
                device, messages = self._read_verified(details, requests, context)
                token = _DEVICE.set(device)
                try:
                    return handler.stream_unary(map(deserialize, messages), context)
                finally:
                    _DEVICE.reset(token)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, response_serializer=handler.response_serializer
            )

        def stream_stream(requests: Iterator[bytes], context: Any) -> Iterator[Any]:
            device, messages = self._read_verified(details, requests, context)
            token = _DEVICE.set(device)
            try:
                yield from handler.stream_stream(map(deserialize, messages), context)
            finally:
                _DEVICE.reset(token)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, response_serializer=handler.response_serializer
        )

    def _read_verified(
        self, details: Any, requests: Iterator[bytes], context: Any
    ) -> tuple[VerifiedDevice, list[bytes]]:
        messages: list[bytes] = []
        timed_out: list[Rejection] = []

        def kept() -> Iterator[bytes]:  # _verify stops reading as soon as the limit is passed
            for message in requests:
                messages.append(message)
                yield message
            if timed_out:  # the stream ended because the call was cancelled: not verified
                raise timed_out[0]

        def expired() -> None:
            timed_out.append(self.calls.verifier.timed_out())  # counted once, as elsewhere
            context.cancel()  # a blocked read cannot time out by itself

        watchdog = threading.Timer(self.body_timeout_seconds, expired)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._verify(details, kept(), context), messages
        finally:
            watchdog.cancel()


class AuthMeshAioServerInterceptor(grpc.aio.ServerInterceptor):
    """``grpc.aio.server(interceptors=[AuthMeshAioServerInterceptor(verifier)])``.

    ``exempt_methods`` as for the sync interceptor; ``body_timeout_seconds`` bounds the
    wait for a whole request stream (``DEADLINE_EXCEEDED`` after it).
    """

    def __init__(
        self,
        verifier: Verifier,
        exempt_methods: Iterable[str] = (),
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.calls = CallVerifier(verifier)
        self.exempt_methods = frozenset(exempt_methods)
        self.body_timeout_seconds = body_timeout_seconds

    async def _verify(
        self, details: Any, messages: tuple[bytes] | AsyncIterable[bytes], context: Any
    ) -> None:
        """``messages``: a unary call's request, already here, or a request stream to read."""
        try:
            pending = self.calls.begin(details.method, details.invocation_metadata)
            digest = MessageDigest()
            if isinstance(messages, tuple):  # nothing to wait for: no timer
                self.calls.take(digest, messages[0])
            else:
                try:
                    async with asyncio.timeout(self.body_timeout_seconds):
                        async for message in messages:
                            self.calls.take(digest, message)
                except TimeoutError:
                    raise self.calls.verifier.timed_out() from None
            device = await self.calls.finish_async(pending, digest.hexdigest())
        except Rejection as rejection:
            await context.abort(*_abort_arguments(rejection, context))
            raise  # abort raises; this line only tells type checkers so
        # grpc.aio serves each call in its own task, so the variable stays with this call.
        _DEVICE.set(device)

    async def _read_verified(
        self, details: Any, requests: AsyncIterable[bytes], context: Any
    ) -> list[bytes]:
        messages: list[bytes] = []

        async def kept() -> AsyncIterator[bytes]:
            async for message in requests:
                messages.append(message)
                yield message

        await self._verify(details, kept(), context)
        return messages

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method in self.exempt_methods:
            return handler
        if handler.request_streaming:
            return self._guard_request_stream(handler, details)
        return self._guard_unary_request(handler, details)

    def _guard_unary_request(self, handler: Any, details: Any) -> Any:
        deserialize = _deserializer(handler)
        if handler.unary_unary is not None:

            async def unary_unary(data: bytes, context: Any) -> Any:
                await self._verify(details, (data,), context)
                return await _result(handler.unary_unary(deserialize(data), context))

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, response_serializer=handler.response_serializer
            )

        async def unary_stream(data: bytes, context: Any) -> AsyncIterator[Any]:
            await self._verify(details, (data,), context)
            async for response in _responses(handler.unary_stream(deserialize(data), context)):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, response_serializer=handler.response_serializer
        )

    def _guard_request_stream(self, handler: Any, details: Any) -> Any:
        deserialize = _deserializer(handler)
        if handler.stream_unary is not None:

            async def stream_unary(requests: AsyncIterable[bytes], context: Any) -> Any:
                messages = await self._read_verified(details, requests, context)
                return await _result(handler.stream_unary(_replay(messages, deserialize), context))

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, response_serializer=handler.response_serializer
            )

        async def stream_stream(requests: AsyncIterable[bytes], context: Any) -> AsyncIterator[Any]:
            messages = await self._read_verified(details, requests, context)
            responses = handler.stream_stream(_replay(messages, deserialize), context)
            async for response in _responses(responses):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, response_serializer=handler.response_serializer
        )


async def _replay(messages: list[bytes], deserialize: Callable[[bytes], Any]) -> AsyncIterator[Any]:
    for message in messages:
        yield deserialize(message)


async def _result(outcome: Any) -> Any:
    return await outcome if inspect.isawaitable(outcome) else outcome


async def _responses(outcome: Any) -> AsyncIterator[Any]:
    """Responses of an aio streaming handler: an (async) iterator, or a coroutine writing them."""
    if inspect.isawaitable(outcome):
        await outcome
        return
    if isinstance(outcome, AsyncIterable):
        async for response in outcome:
            yield response
        return
    for response in outcome:
        yield response
