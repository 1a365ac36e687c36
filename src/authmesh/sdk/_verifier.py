"""Transport-free verification of AuthMesh-signed requests.

Framework adapters (ASGI, WSGI, Django, FastAPI) call :meth:`Verifier.begin` with the
request line and headers, read the raw body themselves (bounded by
:attr:`Verifier.max_body_bytes`), then call :meth:`Verifier.finish` (or
:meth:`Verifier.finish_async`). A refusal is a :class:`Rejection` carrying the exact
status and JSON body the reference middleware sends (spec sdk-keystore.md §6.3).

Differences from the reference ``authMeshVerify``, all wire-compatible (spec §10):

* the signature is checked before the nonce is recorded, so forged requests cannot
  burn nonces or fill the store (W10); nonces are scoped per device;
* the nonce lifetime is at least ``2 * clock_skew + 1`` seconds (W12);
* ``ts`` must be 1-12 plain digits (W14); only ``role == "controller"`` entries may
  authenticate and any malformed allow list is an integrity failure (W17);
* the allow list is cached and re-read only when the file changes, never written (W9);
  the file is checked for changes at most once per ``allow_list_recheck_seconds``
  (default 0.5 s), the bound within which a revocation takes effect;
* the raw request-target is canonicalised, never a mount-relative path (W6);
* version 2 signatures also cover the authority (W15); a peer recorded as speaking
  v2 at pairing is refused when it signs with v1 (no downgrade);
* a lowercase method or raw non-ASCII target is refused with 400, as the reference's
  HTTP servers do before its middleware runs (W19);
* a target is refused with 400 unless it already is its own normalised form (no dot
  segments, backslashes, fragment or empty query) and its escapes decode as UTF-8:
  honest clients send exactly the form they sign, and any other spelling could be
  read by the application as a different request than the one signed;
* every number from the wire is ASCII digits or refused (``Content-Length``: 400);
* log lines name the event and times only: no device ids, keys or nonces.

An optional ``observer`` (:mod:`authmesh.sdk._metrics`) is told the outcome of every
request the verifier decides on, whichever adapter called it.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from authmesh.core import (
    AsyncNonceStore,
    AuthHeader,
    CanonicalError,
    HeaderError,
    InMemoryNonceStore,
    NonceStore,
    body_sha256,
    canonical_string,
    parse_header,
)
from authmesh.core._allowlist import PROTOCOL_V2
from authmesh.core._b64 import B64Error, b64decode
from authmesh.core._canonical import EMPTY_BODY_SHA256, normalize_authority, request_target_path
from authmesh.core._keys import verify_with_key
from authmesh.core._rotation import key_expired
from authmesh.sdk._home import resolve_home
from authmesh.sdk._metrics import Outcome, VerificationObserver
from authmesh.sdk._rotation import InBandRotation, PendingRotation, acknowledgement
from authmesh.sdk._trusted_keys import DEFAULT_RECHECK_SECONDS, TrustedKey, TrustedKeys
from authmesh.store import AllowListStore, StoreError, load_context

__all__ = [
    "DEFAULT_CLOCK_SKEW_SECONDS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_NONCE_WINDOW_SECONDS",
    "SERVER_TIME_HEADER",
    "PendingRequest",
    "Rejection",
    "VerifiedDevice",
    "Verifier",
]

DEFAULT_CLOCK_SKEW_SECONDS = 30
DEFAULT_NONCE_WINDOW_SECONDS = 60
DEFAULT_MAX_BODY_BYTES = 1_048_576
SERVER_TIME_HEADER = "X-AuthMesh-Server-Time"
"""Sent with every 401: the server's clock, so a client can correct its own skew."""

_log = logging.getLogger("authmesh.sdk")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_METHOD = re.compile(r"[A-Z0-9!#$%&'*+.^_`|~-]+")
_DIGITS = re.compile(r"[0-9]+")
_MAX_LENGTH_DIGITS = 18  # longer runs of digits are over any limit (and int() caps digits)
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_ESCAPE_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_INTEGRITY_LOG = "[amesh] CRITICAL: allow list integrity check failed — possible tampering"
# Request-targets already found well-formed, with their signed path: a server sees the same
# few routes (and gRPC methods) over and over, and parsing one costs 1-5 us. Bounded in
# entries and in length: any client, signed or not, chooses the targets a server sees.
_KNOWN_TARGETS = 1024
_KNOWN_TARGET_CHARS = 256


class Rejection(Exception):
    """The request is refused; ``status`` and ``error`` are what goes on the wire.

    ``outcome`` is the reason as observers count it (never sent).
    """

    def __init__(
        self,
        status: int,
        error: str,
        *,
        server_time: int | None = None,
        outcome: Outcome = Outcome.MALFORMED,
    ) -> None:
        super().__init__(f"request refused with {status} {error}")
        self.status = status
        self.error = error
        self.server_time = server_time
        self.outcome = outcome

    @property
    def body(self) -> bytes:
        """Compact JSON, byte-identical to the reference: ``{"error":"<code>"}``."""
        return json.dumps({"error": self.error}, separators=(",", ":")).encode("ascii")

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers: the JSON content type, plus the server time on a 401."""
        headers = [("Content-Type", "application/json")]
        if self.server_time is not None:
            headers.append((SERVER_TIME_HEADER, str(self.server_time)))
        return headers


@dataclass(frozen=True, slots=True)
class VerifiedDevice:
    """Who signed a verified request (``request.state.authmesh`` and friends)."""

    device_id: str
    friendly_name: str
    verified_at: int
    """Server time of verification, Unix seconds."""
    version: str
    """Signature version the request used: ``"1"`` or ``"2"``."""
    rotation_ack: str | None = None
    """For a request that carried a rotation chain: the ``keySeq`` to acknowledge."""

    def as_dict(self) -> dict[str, Any]:
        """The reference's ``req.authMesh`` object."""
        return {
            "deviceId": self.device_id,
            "friendlyName": self.friendly_name,
            "verifiedAt": self.verified_at,
        }


@dataclass(slots=True)
class PendingRequest:
    """A request whose headers passed; the body is still to be read and checked."""

    method: str
    path: str
    authority: str | None
    version: str
    timestamp: str
    nonce: str
    signature: str
    trusted: TrustedKey
    now: int
    seconds: float = 0.0
    """Time spent verifying so far (not waiting for the body)."""
    rotation: PendingRotation | None = None
    rotation_ack: str | None = None


class Verifier:
    """Checks AuthMesh signatures against an HMAC-sealed allow list.

    ``allow_list`` is the :class:`~authmesh.store.AllowListStore` of this server's
    identity (its HMAC key derived from the identity, spec §7.3); :meth:`from_home`
    loads it from an amesh directory.
    ``nonce_store`` may be sync (:class:`~authmesh.core.NonceStore`) or
    async; async stores work only through :meth:`finish_async` (ASGI).
    ``authorities``: the ``host[:port]`` values this server answers to; when set,
    a v2 request signed for any other authority is refused (W15).
    ``allow_list_recheck_seconds``: how often at most the allow-list file is checked
    for changes; a revoked or newly paired device takes effect within this time
    (0: on every request).
    ``observer``: told the :class:`~authmesh.sdk._metrics.Outcome` of every request,
    e.g. :class:`~authmesh.sdk.VerificationMetrics` (Prometheus and logs).
    """

    def __init__(
        self,
        allow_list: AllowListStore,
        *,
        clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS,
        nonce_window_seconds: int = DEFAULT_NONCE_WINDOW_SECONDS,
        nonce_store: NonceStore | AsyncNonceStore | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        authorities: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
        allow_list_recheck_seconds: float = DEFAULT_RECHECK_SECONDS,
        observer: VerificationObserver | None = None,
    ) -> None:
        if clock_skew_seconds < 0 or nonce_window_seconds < 0 or max_body_bytes < 0:
            raise ValueError("clock skew, nonce window and body limit must not be negative")
        self._trusted = TrustedKeys(allow_list, allow_list_recheck_seconds)
        self._rotation = InBandRotation(allow_list, clock)
        self.clock_skew_seconds = clock_skew_seconds
        self.nonce_ttl_seconds = max(nonce_window_seconds, 2 * clock_skew_seconds + 1)
        self.max_body_bytes = max_body_bytes
        self.nonce_store: NonceStore | AsyncNonceStore = (
            InMemoryNonceStore(clock=clock) if nonce_store is None else nonce_store
        )
        self._store_is_async = inspect.iscoroutinefunction(self.nonce_store.check_and_store)
        self._authorities = (
            None if authorities is None else frozenset(normalize_authority(a) for a in authorities)
        )
        self._clock = clock
        self.observer = observer
        self._known_targets: dict[str, str] = {}

    @classmethod
    def from_home(cls, home: str | os.PathLike[str] | None = None, **options: Any) -> Verifier:
        """A verifier for the identity in ``home`` (default: ``$AUTH_MESH_DIR`` or ``~/.amesh``).

        Unlocks the key store once to derive the allow-list key; raises
        :class:`~authmesh.store.StoreError` with a user-facing message on failure.
        """
        context = load_context(resolve_home(home))
        return cls(context.allow_list, **options)

    @property
    def nonce_store_is_async(self) -> bool:
        return self._store_is_async

    def _now(self) -> int:
        return math.floor(self._clock())

    def _report(
        self, outcome: Outcome, status: int, seconds: float | None, version: str | None
    ) -> None:
        if self.observer is not None:
            self.observer.observe(outcome, status, seconds, version)

    def _refused(self, rejection: Rejection, seconds: float | None, version: str | None) -> None:
        self._report(rejection.outcome, rejection.status, seconds, version)

    def begin(
        self,
        method: str,
        target: str,
        authorization: str | None,
        host: str | None,
        rotation: str | None = None,
    ) -> PendingRequest:
        """Check everything that does not need the body; raise :class:`Rejection`.

        ``target`` is the raw request-target as received (origin or absolute
        form), ``authorization`` the first Authorization header value (OWS
        stripped), ``host`` the Host header value and ``rotation`` the
        ``X-AuthMesh-Rotation`` header value (:mod:`authmesh.sdk._rotation`).
        """
        started = perf_counter()
        try:
            pending = self._check_headers(method, target, authorization, host, rotation)
        except Rejection as rejection:
            self._refused(rejection, perf_counter() - started, None)
            raise
        pending.seconds = perf_counter() - started
        return pending

    def _check_headers(
        self,
        method: str,
        target: str,
        authorization: str | None,
        host: str | None,
        rotation: str | None,
    ) -> PendingRequest:
        # Every refusal keeps its place in this order: clients and tests rely on
        # which problem is named when a request has several.
        header = _parsed_header(method, target, authorization)
        path = self._signed_path(target)
        now = self._now()
        trusted, pending_rotation = self._device(header, rotation, now)
        self._check_timing(header, trusted, now)
        return PendingRequest(
            method=method,
            path=path,
            authority=self._authority(header, host, now),
            version=header.v,
            timestamp=header.ts,
            nonce=header.nonce,
            signature=header.sig,
            trusted=trusted,
            now=now,
            rotation=pending_rotation,
            rotation_ack=None if rotation is None else acknowledgement(trusted),
        )

    def _signed_path(self, target: str) -> str:
        """:func:`_signed_path`, remembered for the targets this server keeps seeing."""
        path = self._known_targets.get(target)
        if path is None:
            path = _signed_path(target)
            if len(target) <= _KNOWN_TARGET_CHARS:
                if len(self._known_targets) >= _KNOWN_TARGETS:
                    self._known_targets.clear()
                self._known_targets[target] = path
        return path

    def _device(
        self, header: AuthHeader, rotation: str | None, now: int
    ) -> tuple[TrustedKey, PendingRotation | None]:
        """The trusted entry of the signing key (or the one a rotation chain gives it)."""
        pending_rotation = None
        try:
            trusted = self._trusted.lookup(header.id)
            if trusted is None and rotation is not None:
                resolved = self._rotation.resolve(rotation, header.id)
                trusted, pending_rotation = resolved or (None, None)
        except StoreError as error:  # resolving a chain reads the allow list too
            if error.code == "allow_list_tampered":
                _log.error(_INTEGRITY_LOG)
            else:
                _log.error("[amesh] allow list unreadable: %s", error)
            raise Rejection(500, "internal_error", outcome=Outcome.STORE_FAILURE) from None
        if trusted is None:
            raise self._unauthorized(now, Outcome.UNKNOWN_DEVICE)
        if not trusted.device.may_authenticate:
            self._log_event("role_rejected", now, "0")
            raise self._unauthorized(now, Outcome.ROLE_REFUSED)
        return trusted, pending_rotation

    def _check_timing(self, header: AuthHeader, trusted: TrustedKey, now: int) -> None:
        """Key expiry, the clock-skew window and the protocol the device is pinned to."""
        if key_expired(trusted.device, now):
            self._log_event("key_expired", now, header.ts)
            raise Rejection(401, "key_expired", server_time=now, outcome=Outcome.KEY_EXPIRED)
        requested = int(header.ts) if _TIMESTAMP.fullmatch(header.ts) else None
        if requested is None or abs(now - requested) > self.clock_skew_seconds:
            self._log_event("timestamp_out_of_range", now, header.ts)
            raise self._unauthorized(now, Outcome.SKEW)
        if abs(now - requested) > max(self.clock_skew_seconds - 10, 0):
            self._log_event("clock_drift_warning", now, header.ts)
        if header.v == "1" and trusted.device.protocol == PROTOCOL_V2:
            self._log_event("downgrade_refused", now, header.ts)
            raise self._unauthorized(now, Outcome.DOWNGRADE)

    def _authority(self, header: AuthHeader, host: str | None, now: int) -> str | None:
        """The normalised Host a v2 request is signed for (None for v1); W15."""
        if header.v != "2":
            return None
        try:
            authority = normalize_authority(host or "")
        except CanonicalError:
            authority = None
        if authority is None or (
            self._authorities is not None and authority not in self._authorities
        ):
            self._log_event("wrong_authority", now, header.ts)
            raise self._unauthorized(now, Outcome.WRONG_AUTHORITY)
        return authority

    def check_content_length(self, value: str | None) -> int | None:
        """The declared body length (None if absent), checked before reading.

        ASCII digits only (``²`` passes ``str.isdigit`` and still is no number):
        anything else is refused with 400, a length above the limit with 413.
        """
        if value is None:
            return None
        value = value.strip(" \t")
        if not _DIGITS.fullmatch(value):
            rejection = Rejection(400, "malformed_request")
            self._refused(rejection, None, None)
            raise rejection
        if len(value) > _MAX_LENGTH_DIGITS or int(value) > self.max_body_bytes:
            raise self.too_large()
        return int(value)

    def too_large(self) -> Rejection:
        """The 413 to raise when the body read so far exceeds the limit (reported)."""
        rejection = Rejection(413, "payload_too_large", outcome=Outcome.TOO_LARGE)
        self._refused(rejection, None, None)
        return rejection

    def timed_out(self) -> Rejection:
        """The 408 to raise when the body did not arrive in time (reported)."""
        rejection = Rejection(408, "request_timeout", outcome=Outcome.TIMEOUT)
        self._refused(rejection, None, None)
        return rejection

    def _check_signature(self, pending: PendingRequest, body: bytes) -> str:
        """Verify the signature over the body; return the nonce-store key."""
        key = pending.trusted.public_key
        try:
            message = canonical_string(
                pending.method,
                pending.path,
                pending.timestamp,
                pending.nonce,
                body_sha256(body) if body else EMPTY_BODY_SHA256,
                version=pending.version,
                authority=pending.authority,
            ).encode("utf-8")
            valid = key is not None and verify_with_key(key, b64decode(pending.signature), message)
        except (CanonicalError, B64Error):
            valid = False
        if not valid:
            self._log_event("invalid_signature", pending.now, pending.timestamp)
            raise self._unauthorized(pending.now, Outcome.BAD_SIGNATURE)
        return f"{pending.trusted.device.device_id}:{pending.nonce}"

    def _accepted(self, pending: PendingRequest, fresh: bool, started: float) -> VerifiedDevice:
        if not fresh:
            self._log_event("replay_detected", pending.now, pending.timestamp)
            rejection = self._unauthorized(pending.now, Outcome.REPLAY)
            self._finished(pending, started, rejection)
            raise rejection
        if pending.rotation is not None:
            if not self._rotation.commit(pending.rotation):
                rejection = self._unauthorized(pending.now, Outcome.UNKNOWN_DEVICE)
                self._finished(pending, started, rejection)
                raise rejection
            self._trusted.invalidate()
        self._finished(pending, started, None)
        device = pending.trusted.device
        return VerifiedDevice(
            device.device_id,
            device.friendly_name,
            pending.now,
            pending.version,
            pending.rotation_ack,
        )

    def _finished(self, pending: PendingRequest, started: float, error: Rejection | None) -> None:
        seconds = pending.seconds + perf_counter() - started
        if error is None:
            self._report(Outcome.ACCEPTED, 200, seconds, pending.version)
        else:
            self._refused(error, seconds, pending.version)

    def _store_failed(self) -> Rejection:
        _log.error("[amesh] nonce store unavailable: refusing the request (fail closed)")
        return Rejection(500, "internal_error", outcome=Outcome.STORE_FAILURE)

    def _fresh(self, key: str) -> bool:
        """Record the nonce in a sync store: True if it was not there yet."""
        store: NonceStore = self.nonce_store  # type: ignore[assignment]
        try:
            return store.check_and_store(key, self.nonce_ttl_seconds)
        except Exception:  # whatever the store raised, fail closed
            raise self._store_failed() from None

    async def _fresh_async(self, key: str) -> bool:
        store: AsyncNonceStore = self.nonce_store  # type: ignore[assignment]
        try:
            return await store.check_and_store(key, self.nonce_ttl_seconds)
        except Exception:  # whatever the store raised, fail closed
            raise self._store_failed() from None

    def finish(self, pending: PendingRequest, body: bytes) -> VerifiedDevice:
        """Verify the signature over ``body``, then record the nonce (sync store)."""
        if self._store_is_async:
            raise TypeError("this Verifier has an async nonce store: use finish_async")
        started = perf_counter()
        try:
            fresh = self._fresh(self._check_signature(pending, body))
        except Rejection as rejection:
            self._finished(pending, started, rejection)
            raise
        return self._accepted(pending, fresh, started)

    async def finish_async(self, pending: PendingRequest, body: bytes) -> VerifiedDevice:
        """As :meth:`finish`, awaiting an async nonce store when there is one."""
        started = perf_counter()
        try:
            key = self._check_signature(pending, body)
            fresh = await self._fresh_async(key) if self._store_is_async else self._fresh(key)
        except Rejection as rejection:
            self._finished(pending, started, rejection)
            raise
        return self._accepted(pending, fresh, started)

    def verify(
        self,
        method: str,
        target: str,
        authorization: str | None,
        host: str | None,
        body: bytes,
    ) -> VerifiedDevice:
        """All steps at once for a request whose body is already in memory."""
        pending = self.begin(method, target, authorization, host)
        if len(body) > self.max_body_bytes:
            raise self.too_large()
        return self.finish(pending, body)

    def _unauthorized(self, now: int, outcome: Outcome) -> Rejection:
        return Rejection(401, "unauthorized", server_time=now, outcome=outcome)

    @staticmethod
    def _log_event(event: str, now: int, request_ts: str) -> None:
        shown = request_ts if _TIMESTAMP.fullmatch(request_ts) else "NaN"
        _log.warning("[amesh] %s: serverNow=%d requestTs=%s", event, now, shown)


def _escapes_are_utf8(text: str) -> bool:
    """Every run of ``%XX`` escapes decodes as UTF-8 (literal ASCII breaks any sequence)."""
    if "%" not in text:
        return True
    for run in _ESCAPE_RUN.findall(text):
        try:
            bytes.fromhex(run.replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _parsed_header(method: str, target: str, authorization: str | None) -> AuthHeader:
    """The Authorization header of a well-formed request, in a version we speak."""
    if not _METHOD.fullmatch(method) or not target.isascii():
        raise Rejection(400, "malformed_request")
    try:
        header = parse_header(authorization)
    except HeaderError as error:
        raise Rejection(
            400, "missing_header" if error.reason == "absent" else "malformed_header"
        ) from None
    if header.v not in ("1", "2"):
        raise Rejection(400, "unsupported_version")
    return header


def _signed_path(target: str) -> str:
    """The stage-A path of a received target, which must already be in that form.

    An absolute-form target contributes its path and query. Any target whose
    normalised form differs from what arrived (``/a/../b``, ``/a\\\\b``, ``%2e%2e``,
    a fragment, an empty ``?``), whose path starts with an empty segment, or whose
    escapes are not UTF-8 (``%FE`` and ``%FF``
    canonicalise alike in a query) is refused with 400: honest clients send the
    normalised form, and the application could read another spelling differently.
    """
    absolute = _ABSOLUTE_FORM.match(target)
    received = (target[absolute.end() :] or "/") if absolute else target
    try:
        path = request_target_path(received)
    except CanonicalError:
        path = None
    if path != received or _empty_first_segment(received) or not _escapes_are_utf8(received):
        raise Rejection(400, "malformed_request")
    return path


def _empty_first_segment(path: str) -> bool:
    """``//x`` or ``/%2Fx``: Flask collapses the leading slashes, other servers see a host."""
    return path.startswith("//") or path[1:4] in ("%2F", "%2f")
