"""Signing HTTP clients: :class:`AuthMeshAuth` for httpx (sync and async) and requests,
and :class:`Client` / :class:`AsyncClient`, httpx clients that sign every request.

The signature covers exactly what goes on the wire (spec §5.5):

* the request-target is put in WHATWG-normal form (dot segments resolved, ``^``,
  ``{`` ``}``, spaces and non-ASCII percent-encoded) and the request is sent with
  exactly that target — nothing re-quotes it after signing;
* the body bytes are the ones sent: ``bytes`` as is (not ``String(bytes)``, W21),
  text as UTF-8, and streams, generators, files and multipart forms are buffered up
  to ``max_body_bytes`` and sent from the buffer (larger bodies are refused with a
  :class:`SigningError` before anything is sent);
* the method is sent uppercase and exactly one Authorization header replaces any
  the caller set. With httpx every redirect hop is signed afresh; requests does not
  re-run auth on redirects, so pass ``allow_redirects=False`` there.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from authmesh.core import ROLE_TARGET, CanonicalError, body_sha256
from authmesh.core._allowlist import PROTOCOL_V2
from authmesh.core._canonical import normalize_authority, request_target_path, split_url
from authmesh.errors import AuthMeshError
from authmesh.sdk._home import resolve_home
from authmesh.sdk._rotation import ACK_HEADER, ROTATION_HEADER, RotationAnnouncer
from authmesh.sdk._signing import KeySigner, RequestSigner
from authmesh.sdk._verifier import DEFAULT_MAX_BODY_BYTES, SERVER_TIME_HEADER
from authmesh.store import AmeshHome, Context, load_context

__all__ = ["AsyncClient", "AuthMeshAuth", "Client", "SigningError"]


class SigningError(AuthMeshError):
    """A request cannot be signed as given; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__("signing_failed", message)


def _too_large(limit: int) -> SigningError:
    return SigningError(
        f"The request body is larger than {limit} bytes, the most AuthMeshAuth buffers to "
        "sign it; pass a larger max_body_bytes or send a smaller body."
    )


def _wire_target(raw_target: str) -> str:
    try:
        return request_target_path(raw_target)
    except CanonicalError as error:
        raise SigningError(f"The request URL cannot be signed: {error}.") from None


@lru_cache(maxsize=8)
def _context(home: AmeshHome) -> Context:
    """Identity, key store and allow list of a home, loaded (and unlocked) once."""
    return load_context(home)


def _peer_version(context: Context, peer: str | None) -> str:
    """v2 when the peer (or, without one, every target we paired with) recorded v2."""
    devices = context.allow_list.snapshot().devices
    if peer is not None:
        matches = [d for d in devices if peer in (d.device_id, d.friendly_name)]
        if not matches:
            raise SigningError(
                f"No paired device is called {peer!r}; check `amesh list` for its id or name."
            )
        return "2" if matches[0].protocol == PROTOCOL_V2 else "1"
    targets = [d for d in devices if d.role == ROLE_TARGET]
    return "2" if targets and all(d.protocol == PROTOCOL_V2 for d in targets) else "1"


class AuthMeshAuth(httpx.Auth):
    """Signs each request; pass as ``auth=`` to httpx (sync or async) or requests.

    ``adopt_server_time``: on a 401 carrying the server's time while our clock is
    more than 10 s off (at most 5 min), re-sign once with the server's clock.
    ``rotation`` (set by :meth:`from_home`): follow ``amesh rotate`` and announce the
    new key to each server until it acknowledges it (:mod:`authmesh.sdk._rotation`).
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        signer: KeySigner | RequestSigner,
        public_key_b64: str | None = None,
        *,
        version: str = "1",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        adopt_server_time: bool = False,
        rotation: RotationAnnouncer | None = None,
    ) -> None:
        self.rotation = rotation
        if isinstance(signer, RequestSigner):
            self.signer = signer
        else:
            self.signer = RequestSigner(signer, public_key_b64, version=version)
        self.max_body_bytes = max_body_bytes
        self.adopt_server_time = adopt_server_time

    @classmethod
    def from_home(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        peer: str | None = None,
        **options: Any,
    ) -> AuthMeshAuth:
        """Sign as the identity in ``home`` (default ``$AUTH_MESH_DIR`` or ``~/.amesh``).

        The key is unlocked once per process and home. ``peer`` (device id or
        friendly name) picks the signature version that peer was paired with.
        Raises :class:`~authmesh.store.StoreError` with a user-facing message.
        """
        amesh_home = resolve_home(None if home is None else Path(home).resolve())
        context = _context(amesh_home)
        options.setdefault("version", _peer_version(context, peer))
        options.setdefault("rotation", RotationAnnouncer(amesh_home, context))
        return cls(context.signer, context.identity.public_key, **options)

    # httpx -------------------------------------------------------------------

    def _current_signer(self, server: str) -> RequestSigner:
        """The signer for ``server``: the home's new key once ``amesh rotate`` switched it,
        or the retired key (in its grace period) for a server that cannot take rotations."""
        if self.rotation is None:
            return self.signer
        self.signer = self.rotation.current(self.signer)
        return self.rotation.retired_for(server, self.signer.version) or self.signer

    def _announce(self, headers: Any, server: str, signer: RequestSigner) -> None:
        if self.rotation is None:
            return
        chain = self.rotation.header_for(server, signer.public_key_b64)
        if chain is None:
            headers.pop(ROTATION_HEADER, None)
        else:
            headers[ROTATION_HEADER] = chain

    def _rotation_retry(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Record the server's ack; after a 401, retry with the chain (if it was not sent)
        or, when the chain was ignored, with the retired key while its grace period lasts."""
        rotation = self.rotation
        if rotation is None:
            return False
        server = request.headers.get("host", "")
        ack = response.headers.get(ACK_HEADER)
        rotation.observe(server, ack)
        if response.status_code != 401:
            return False
        if ROTATION_HEADER in request.headers:
            return ack is None and rotation.fall_back(server, self.signer.version)
        rotation.forget(server)
        return rotation.seq > 0

    def _sign_httpx(self, request: httpx.Request, body: bytes) -> None:
        server = request.headers.get("host", "")
        signer = self._current_signer(server)
        raw_target = request.url.raw_path.decode("ascii")
        target = _wire_target(raw_target)
        if target != raw_target:
            request.url = request.url.copy_with(raw_path=target.encode("ascii"))
            if request.url.raw_path.decode("ascii") != target:
                raise SigningError(
                    "httpx would re-encode this URL's path after signing; "
                    "percent-encode the path yourself."
                )
        authority = None
        if signer.version == "2":
            try:
                authority = normalize_authority(request.headers.get("host", ""))
            except CanonicalError as error:
                raise SigningError(f"The request URL cannot be signed: {error}.") from None
        request.headers["Authorization"] = signer.authorization(
            request.method, target, body_sha256(body), authority
        )
        self._announce(request.headers, server, signer)

    def _retry(self, response: httpx.Response) -> bool:
        return (
            self.adopt_server_time
            and response.status_code == 401
            and self.signer.learn_server_time(response.headers.get(SERVER_TIME_HEADER))
        )

    @staticmethod
    def _replace_stream(request: httpx.Request, body: bytes) -> None:
        request.stream = httpx.ByteStream(body)
        request.headers.pop("transfer-encoding", None)
        request.headers["content-length"] = str(len(body))

    def _add(self, chunks: list[bytes], chunk: bytes, total: int) -> int:
        total += len(chunk)
        if total > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        chunks.append(chunk)
        return total

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        try:
            body = request.content
        except httpx.RequestNotRead:
            chunks: list[bytes] = []
            total = 0
            for chunk in request.stream:  # type: ignore[union-attr]
                total = self._add(chunks, chunk, total)
            body = b"".join(chunks)
            self._replace_stream(request, body)
        if len(body) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        self._sign_httpx(request, body)
        response = yield request
        if self._rotation_retry(request, response) | self._retry(response):
            self._sign_httpx(request, body)
            response = yield request
            self._rotation_retry(request, response)  # what it learns serves the next request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        try:
            body = request.content
        except httpx.RequestNotRead:
            chunks: list[bytes] = []
            total = 0
            async for chunk in request.stream:  # type: ignore[union-attr]
                total = self._add(chunks, chunk, total)
            body = b"".join(chunks)
            self._replace_stream(request, body)
        if len(body) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        self._sign_httpx(request, body)
        response = yield request
        if self._rotation_retry(request, response) | self._retry(response):
            self._sign_httpx(request, body)
            response = yield request
            self._rotation_retry(request, response)  # what it learns serves the next request

    # requests ----------------------------------------------------------------

    def _requests_body(self, body: object) -> bytes:
        if body is None:
            return b""
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode("utf-8")
        if hasattr(body, "read"):
            data = body.read(self.max_body_bytes + 1)
            return data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if isinstance(body, Iterable):
            chunks: list[bytes] = []
            total = 0
            for chunk in body:
                data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
                total = self._add(chunks, data, total)
            return b"".join(chunks)
        raise SigningError(f"A request body of type {type(body).__name__} cannot be signed.")

    def __call__(self, request: Any) -> Any:
        """requests: sign a ``PreparedRequest`` in place (used as ``auth=``)."""
        body = self._requests_body(request.body)
        if len(body) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        if body or request.body is not None:
            request.body = body
            request.headers.pop("Transfer-Encoding", None)
            request.headers["Content-Length"] = str(len(body))
        request.method = (request.method or "GET").upper()
        parts = urlsplit(request.url)
        target = _wire_target(request.path_url)
        request.url = f"{parts.scheme}://{parts.netloc}{target}"
        signer = self._current_signer(parts.netloc)
        authority = None
        if signer.version == "2":
            try:
                authority = split_url(request.url).authority
            except CanonicalError as error:
                raise SigningError(f"The request URL cannot be signed: {error}.") from None
            request.headers["Host"] = authority
        request.headers["Authorization"] = signer.authorization(
            request.method, target, body_sha256(body), authority
        )
        self._announce(request.headers, parts.netloc, signer)
        return request


class Client(httpx.Client):
    """``authmesh.Client().get(url)``: an httpx client signing as the local identity.

    Pass ``auth=AuthMeshAuth(...)`` to sign with another key, otherwise the identity
    of ``home`` is loaded once (``peer`` picks the signature version).
    """

    def __init__(
        self,
        *,
        home: str | os.PathLike[str] | None = None,
        peer: str | None = None,
        auth: AuthMeshAuth | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(auth=auth or AuthMeshAuth.from_home(home, peer=peer), **kwargs)


class AsyncClient(httpx.AsyncClient):
    """The asyncio twin of :class:`Client`."""

    def __init__(
        self,
        *,
        home: str | os.PathLike[str] | None = None,
        peer: str | None = None,
        auth: AuthMeshAuth | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(auth=auth or AuthMeshAuth.from_home(home, peer=peer), **kwargs)
