"""Pairing v2: commit before reveal, transcript-bound identities, split keys, explicit verdict.

The exact protocol and its rationale are in ``docs/pairing.md``. In short (C = controller,
T = target, all messages inside relay ``data`` payloads as compact JSON):

1. C -> T ``commit``:   ``c = SHA-256("amesh-pair-v2/commit" 0x00 || E_C || N_C)``
2. T -> C ``key``:      ``E_T``
3. C -> T ``reveal``:   ``E_C, N_C``; T checks ``c``.
4. Both: ``ss = ECDH``, ``TH = SHA-256(...protocol, otc, c, E_T, E_C, N_C)``, and from
   HKDF(ss, salt=TH): one key per direction and the 6-digit SAS.
5. C -> T, then T -> C ``identity`` (sealed): long-term key, name, timestamp and a signature
   over a domain-prefixed, length-delimited statement that includes the role and ``TH``.
6. T's operator types the SAS shown by C; T -> C ``confirm`` (sealed) with the verdict;
   C -> T ``receipt`` (sealed) once it has the verdict.

Because C is bound to ``E_C`` before it sees ``E_T``, and T reveals ``E_T`` before it learns
``E_C``, a relay in the middle must fix both legs' SAS inputs before it can compute either
SAS: it matches with probability 10^-6 per attempt instead of by grinding (W1).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from authmesh.core import PrivateKey, Signer
from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._sas import format_sas
from authmesh.core._tunnel import NONCE_LENGTH, TunnelError, hkdf_sha256, open_blob, seal_b64
from authmesh.pairing._errors import PairingError
from authmesh.pairing._identity import (
    PeerIdentity,
    data_payload,
    length_prefixed,
    peer_public_key,
    signed_identity,
    verified_identity,
)
from authmesh.pairing._identity import identity_statement as statement
from authmesh.pairing._relay_client import Frame, encode_frame, json_object

__all__ = [
    "MAX_CLOCK_SKEW_SECONDS",
    "PROTOCOL",
    "V2Controller",
    "V2Target",
    "commitment",
    "identity_statement",
    "schedule",
    "transcript_hash",
]

PROTOCOL = 2
MAX_CLOCK_SKEW_SECONDS = 300
_DOMAIN = b"amesh-pair-v2"
_NONCE_BYTES = 32


def commitment(controller_ephemeral: bytes, controller_nonce: bytes) -> bytes:
    return hashlib.sha256(
        _DOMAIN + b"/commit\x00" + controller_ephemeral + controller_nonce
    ).digest()


def transcript_hash(
    otc: str,
    commit: bytes,
    target_ephemeral: bytes,
    controller_ephemeral: bytes,
    controller_nonce: bytes,
) -> bytes:
    """Binds the protocol number, the session code and every value exchanged in the clear."""
    return hashlib.sha256(
        _DOMAIN
        + b"/transcript\x00"
        + struct.pack(">I", PROTOCOL)
        + length_prefixed(otc.encode("ascii"))
        + length_prefixed(commit)
        + length_prefixed(target_ephemeral)
        + length_prefixed(controller_ephemeral)
        + length_prefixed(controller_nonce)
    ).digest()


def schedule(shared_secret: bytes, transcript: bytes) -> tuple[bytes, bytes, str]:
    """(controller->target key, target->controller key, SAS) from HKDF(ss, salt=TH)."""

    def expand(label: bytes, length: int = 32) -> bytes:
        return hkdf_sha256(
            shared_secret, salt=transcript, info=_DOMAIN + b"/" + label, length=length
        )

    sas_value = int.from_bytes(expand(b"sas", 8), "big")
    return expand(b"controller-to-target"), expand(b"target-to-controller"), format_sas(sas_value)


def identity_statement(
    role: str, transcript: bytes, public_key: bytes, name: str, timestamp: str
) -> bytes:
    """What an identity signature covers: domain, role, transcript, key, name, timestamp."""
    return statement(_DOMAIN, role, transcript, public_key, name=name, timestamp=timestamp)


def _parse_timestamp(text: str) -> float:
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise PairingError("protocol_violation") from exc
    return moment.timestamp()


def _message(payload: dict[str, Any]) -> Frame:
    return {"type": "data", "payload": encode_frame({"v": PROTOCOL, **payload})}


def _expect(message: Frame, kind: str) -> dict[str, Any]:
    body = json_object(data_payload(message))
    if body.get("v") != PROTOCOL or body.get("kind") != kind:
        raise PairingError("protocol_violation")
    return body


def _byteslength_prefixed(body: dict[str, Any], name: str, length: int) -> bytes:
    value = body.get(name)
    try:
        raw = b64decode(value) if isinstance(value, str) else b""
    except B64Error:
        raw = b""
    if len(raw) != length:
        raise PairingError("protocol_violation")
    return raw


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _in_order(expected: str, following: str) -> Callable[[_Method], _Method]:
    """Message order enforced by the object itself: a step out of turn, or any step after a
    failed one, ends the exchange with ``protocol_violation``."""

    def decorate(method: _Method) -> _Method:
        @functools.wraps(method)
        def step(self: _Side, *args: Any) -> Any:
            if self._stage != expected:
                self._stage = "failed"
                raise PairingError("protocol_violation")
            self._stage = "failed"  # until the step succeeds
            result = method(self, *args)
            self._stage = following
            return result

        return step  # type: ignore[return-value]

    return decorate


class _Side:
    """State common to both roles: keys, counters, the sealed channel, identity checks."""

    role: str
    peer_role: str

    def __init__(
        self,
        signer: Signer,
        name: str,
        otc: str,
        *,
        clock: Callable[[], float] = time.time,
        ephemeral: PrivateKey | None = None,
    ) -> None:
        self._signer = signer
        self._name = name
        self._otc = otc
        self._clock = clock
        self._ephemeral = ephemeral or PrivateKey.generate()
        self._send_key = b""
        self._receive_key = b""
        self._sent = 0
        self._received = 0
        self.transcript = b""
        self.sas = ""
        self._stage = "new"

    def _establish(self, shared: bytes, transcript: bytes) -> None:
        to_target, to_controller, self.sas = schedule(shared, transcript)
        self.transcript = transcript
        if self.role == "controller":
            self._send_key, self._receive_key = to_target, to_controller
        else:
            self._send_key, self._receive_key = to_controller, to_target

    def _sealed(self, kind: str, content: dict[str, Any]) -> Frame:
        # Counter nonces: each direction has its own key, so (key, nonce) never repeats, and
        # the receiver can refuse a replayed or reordered message.
        nonce = self._sent.to_bytes(NONCE_LENGTH, "big")
        self._sent += 1
        box = seal_b64(
            self._send_key,
            encode_frame(content).encode("utf-8"),
            aad=_DOMAIN + b"/" + kind.encode(),
            nonce=nonce,
        )
        return _message({"kind": kind, "box": box})

    def _open(self, message: Frame, kind: str) -> dict[str, Any]:
        body = _expect(message, kind)
        box = body.get("box")
        if not isinstance(box, str):
            raise PairingError("protocol_violation")
        try:
            blob = b64decode(box)
        except B64Error as exc:
            raise PairingError("decrypt_failed") from exc
        if blob[:NONCE_LENGTH] != self._received.to_bytes(NONCE_LENGTH, "big"):
            raise PairingError("protocol_violation")  # replayed, reordered or reflected
        try:
            plaintext = open_blob(self._receive_key, blob, aad=_DOMAIN + b"/" + kind.encode())
        except TunnelError as exc:
            raise PairingError("decrypt_failed") from exc
        self._received += 1
        return json_object(plaintext)

    def _identity_frame(self) -> Frame:
        fields = signed_identity(
            self._signer, _DOMAIN, self.role, self.transcript, name=self._name, now=self._clock()
        )
        return self._sealed("identity", fields)

    def _peer_identity(self, message: Frame) -> PeerIdentity:
        fields = self._open(message, "identity")
        peer = verified_identity(
            fields, _DOMAIN, self.peer_role, self.transcript, self._signer.public_key
        )
        if abs(_parse_timestamp(peer.timestamp) - self._clock()) > MAX_CLOCK_SKEW_SECONDS:
            raise PairingError("clock_skew")
        return peer


class V2Controller(_Side):
    """``invite``: commits first, reveals after seeing the target's key, displays the SAS."""

    role, peer_role = "controller", "target"

    def __init__(
        self,
        signer: Signer,
        name: str,
        otc: str,
        *,
        clock: Callable[[], float] = time.time,
        ephemeral: PrivateKey | None = None,
        nonce: bytes | None = None,
    ) -> None:
        super().__init__(signer, name, otc, clock=clock, ephemeral=ephemeral)
        self._nonce = nonce if nonce is not None else secrets.token_bytes(_NONCE_BYTES)
        self._commitment = commitment(self._ephemeral.public_key, self._nonce)

    def connect_frame(self) -> Frame:
        return {"type": "connect", "otc": self._otc, "protocol": PROTOCOL}

    @_in_order("new", "committed")
    def commit_frame(self) -> Frame:
        return _message({"kind": "commit", "commitment": b64encode(self._commitment)})

    @_in_order("committed", "revealed")
    def on_target_key(self, message: Frame) -> list[Frame]:
        """Take ``E_T``; returns the reveal and our sealed identity."""
        body = _expect(message, "key")
        target_ephemeral = peer_public_key(body.get("ephemeralKey"), self._ephemeral.public_key)
        shared = self._ephemeral.exchange(target_ephemeral)
        own = self._ephemeral.public_key
        transcript = transcript_hash(
            self._otc, self._commitment, target_ephemeral, own, self._nonce
        )
        self._establish(shared, transcript)
        reveal = _message(
            {"kind": "reveal", "ephemeralKey": b64encode(own), "nonce": b64encode(self._nonce)}
        )
        return [reveal, self._identity_frame()]

    @_in_order("revealed", "identified")
    def on_target_identity(self, message: Frame) -> PeerIdentity:
        return self._peer_identity(message)

    @_in_order("identified", "confirmed")
    def on_confirm(self, message: Frame) -> bool:
        """The target's verdict on the SAS."""
        accepted = self._open(message, "confirm").get("accepted")
        if not isinstance(accepted, bool):
            raise PairingError("protocol_violation")
        return accepted

    @_in_order("confirmed", "done")
    def receipt_frame(self) -> Frame:
        return self._sealed("receipt", {"received": True})


class V2Target(_Side):
    """``listen``: answers the commitment with ``E_T``, checks the reveal, asks for the SAS."""

    role, peer_role = "target", "controller"
    _commitment = b""  # the controller's, once its commit frame arrives
    _accepted = False

    def listen_frame(self) -> Frame:
        return {"type": "listen", "otc": self._otc, "protocol": PROTOCOL}

    @_in_order("new", "committed")
    def on_commit(self, message: Frame) -> Frame:
        self._commitment = _byteslength_prefixed(_expect(message, "commit"), "commitment", 32)
        return _message({"kind": "key", "ephemeralKey": self._ephemeral.public_key_b64})

    @_in_order("committed", "revealed")
    def on_reveal(self, message: Frame) -> None:
        body = _expect(message, "reveal")
        own = self._ephemeral.public_key
        controller_ephemeral = peer_public_key(body.get("ephemeralKey"), own)
        nonce = _byteslength_prefixed(body, "nonce", _NONCE_BYTES)
        if not hmac.compare_digest(commitment(controller_ephemeral, nonce), self._commitment):
            raise PairingError("commitment_mismatch")
        transcript = transcript_hash(self._otc, self._commitment, own, controller_ephemeral, nonce)
        self._establish(self._ephemeral.exchange(controller_ephemeral), transcript)

    @_in_order("revealed", "identified")
    def on_controller_identity(self, message: Frame) -> tuple[PeerIdentity, Frame]:
        """Verify the controller; returns it and our sealed identity to send."""
        return self._peer_identity(message), self._identity_frame()

    @_in_order("identified", "confirmed")
    def confirm_frame(self, accepted: bool) -> Frame:
        """The verdict, sent once; after a rejection the exchange is over (on_receipt refuses)."""
        self._accepted = accepted
        return self._sealed("confirm", {"accepted": accepted})

    @_in_order("confirmed", "done")
    def on_receipt(self, message: Frame) -> None:
        if not self._accepted:
            raise PairingError("protocol_violation")
        if self._open(message, "receipt").get("received") is not True:
            raise PairingError("protocol_violation")
