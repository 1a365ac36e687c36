"""Pairing v3: one code typed once, a PAKE instead of a verification step (sans-I/O).

The exact wire format and its security argument are in ``docs/protocol.md``. In short
(C = controller, T = target; every message is a relay ``data`` payload of compact JSON):

1. ``listen``/``connect`` carry only the routing part of the :class:`PairingCode`, as the
   reference's frames do, so any relay that forwards ``data`` frames will do.
2. Both -> ``pake``: a SPAKE2 message (``spake2``: C is side A, T is side B) over the password
   ``domain || routing || password``, with the role names and protocol as SPAKE2 identities.
3. Both derive ``TH = SHA-256(domain, version, routing, both version lists, both PAKE
   messages)`` and, from HKDF(PAKE key, salt=TH), one AES-256-GCM key per direction.
4. Both -> ``identity`` (sealed): role, device id, key, name, timestamp, versions and an
   ECDSA signature over a length-delimited statement of the role, ``TH`` and those fields.
5. Both -> ``finish`` (sealed): the operator did (or did not) accept the peer. A side that
   receives its peer's ``finish`` knows the peer verified it; the trust decision itself rests
   on steps 2-4, which a relay without the password cannot complete.

A wrong password gives different keys, so the first sealed message fails to open on both
sides: a typo and a relay's guess look the same and end the same way, nothing saved.
Each object enforces the order above; a frame out of order ends it with ``protocol_violation``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]
from spake2.ed25519_basic import NotOnCurve  # type: ignore[import-untyped]
from spake2.spake2 import SPAKEError  # type: ignore[import-untyped]

from authmesh.core import Signer, device_id
from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._tunnel import NONCE_LENGTH, hkdf_sha256
from authmesh.pairing._code import PairingCode
from authmesh.pairing._errors import PairingError
from authmesh.pairing._identity import (
    PeerIdentity,
    data_payload,
    length_prefixed,
    signed_identity,
    verified_identity,
)
from authmesh.pairing._relay_client import Frame, encode_frame, json_object

__all__ = [
    "PAKE_MESSAGE_BYTES",
    "PROTOCOL",
    "SUPPORTED_VERSIONS",
    "V3Controller",
    "V3Target",
    "transcript_hash",
]

PROTOCOL = 3
SUPPORTED_VERSIONS = (3,)
PAKE_MESSAGE_BYTES = 33  # side byte + Ed25519 group element
_DOMAIN = b"amesh-pair-v3"
Stage = Literal["new", "pake", "identity", "decide", "finish", "done", "failed"]


def _pake_password(code: PairingCode) -> bytes:
    return _DOMAIN + b"\x00" + code.routing.encode() + b"\x00" + code.password.encode()


def _pake_identity(role: str) -> bytes:
    return _DOMAIN + b"/" + role.encode()


def _versions_bytes(versions: list[int]) -> bytes:
    return ",".join(str(version) for version in versions).encode()


def transcript_hash(
    routing: str,
    controller_versions: list[int],
    target_versions: list[int],
    controller_pake: bytes,
    target_pake: bytes,
) -> bytes:
    """Binds protocol, session, what each side offered and both PAKE messages."""
    return hashlib.sha256(
        _DOMAIN
        + b"/transcript\x00"
        + PROTOCOL.to_bytes(4, "big")
        + length_prefixed(routing.encode("ascii"))
        + length_prefixed(_versions_bytes(controller_versions))
        + length_prefixed(_versions_bytes(target_versions))
        + length_prefixed(controller_pake)
        + length_prefixed(target_pake)
    ).digest()


def _clear_body(message: Frame) -> dict[str, Any]:
    """A v3 payload; a peer speaking another version is named, never silently accepted."""
    payload = data_payload(message)
    try:
        body = json_object(payload)
    except PairingError:
        body = {}
    version = body.get("v")
    if version == 2:
        raise PairingError("peer_is_v2")
    if version != PROTOCOL:
        # The reference sends a bare base64 key first; anything else is not a v3 peer either.
        raise PairingError("peer_is_legacy")
    return body


def _int_list(value: object) -> list[int]:
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= 16
        or not all(type(item) is int and 0 < item < 2**16 for item in value)
    ):
        raise PairingError("protocol_violation")
    return list(value)


class _Side:
    """The v3 exchange from one side; :class:`V3Controller` and :class:`V3Target` fix roles."""

    role: str
    peer_role: str
    _pake_class: Any

    def __init__(
        self,
        signer: Signer,
        name: str,
        code: PairingCode,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = signer
        self._name = name
        self._code = code
        self._clock = clock
        self._pake = self._pake_class(
            _pake_password(code),
            idA=_pake_identity("controller"),
            idB=_pake_identity("target"),
        )
        self._pake_message = b""
        self._send_key = self._receive_key = b""
        self._sent = self._received = 0
        self._stage: Stage = "new"
        self._peer_accepted = False
        self.transcript = b""
        self.peer: PeerIdentity | None = None

    @property
    def finished(self) -> bool:
        """Both sides verified each other and both operators accepted."""
        return self._stage == "done"

    def start(self) -> Frame:
        """Our PAKE message, sent as soon as the relay reports the peer."""
        self._require("new")
        self._pake_message = self._pake.start()
        self._stage = "pake"
        body = {
            "v": PROTOCOL,
            "kind": "pake",
            "versions": list(SUPPORTED_VERSIONS),
            "pake": b64encode(self._pake_message),
        }
        return {"type": "data", "payload": encode_frame(body)}

    def receive(self, message: Frame) -> list[Frame]:
        """One frame from the peer, in protocol order; returns the frames to send."""
        try:
            if self._stage == "pake":
                return [self._on_pake(message)]
            if self._stage == "identity":
                self._on_identity(message)
                return []
            if self._stage in ("decide", "finish") and not self._peer_accepted:
                self._on_finish(message)
                return []
            raise PairingError("protocol_violation")
        except PairingError:
            self._stage = "failed"
            raise

    def accept(self) -> Frame:
        """Our ``finish``: this side verified the peer and its operator accepts it."""
        self._require("decide")
        self._stage = "done" if self._peer_accepted else "finish"
        return self._sealed("finish", {"accepted": True})

    def decline(self) -> Frame:
        """Our ``finish`` saying no; the peer saves nothing."""
        self._require("decide")
        self._stage = "failed"
        return self._sealed("finish", {"accepted": False})

    def _require(self, stage: Stage) -> None:
        if self._stage != stage:
            self._stage = "failed"
            raise PairingError("protocol_violation")

    def _on_pake(self, message: Frame) -> Frame:
        body = _clear_body(message)
        versions = _int_list(body.get("versions"))
        if body.get("kind") != "pake" or PROTOCOL not in versions:
            raise PairingError("protocol_violation")
        encoded = body.get("pake")
        try:
            peer_message = b64decode(encoded) if isinstance(encoded, str) else b""
        except B64Error as exc:
            raise PairingError("protocol_violation") from exc
        if len(peer_message) != PAKE_MESSAGE_BYTES:
            raise PairingError("protocol_violation")
        try:
            key = self._pake.finish(peer_message)
        except SPAKEError as exc:  # the other side's byte: swapped roles or a reflection
            raise PairingError("role_mismatch") from exc
        except (ValueError, NotOnCurve) as exc:
            raise PairingError("protocol_violation") from exc
        self._establish(key, versions, peer_message)
        self._stage = "identity"
        return self._identity_frame()

    def _establish(self, key: bytes, peer_versions: list[int], peer_message: bytes) -> None:
        mine = list(SUPPORTED_VERSIONS)
        if self.role == "controller":
            versions, messages = (mine, peer_versions), (self._pake_message, peer_message)
        else:
            versions, messages = (peer_versions, mine), (peer_message, self._pake_message)
        self.transcript = transcript_hash(self._code.routing, *versions, *messages)

        def expand(label: bytes) -> bytes:
            return hkdf_sha256(key, salt=self.transcript, info=_DOMAIN + b"/" + label)

        to_target, to_controller = expand(b"controller-to-target"), expand(b"target-to-controller")
        if self.role == "controller":
            self._send_key, self._receive_key = to_target, to_controller
        else:
            self._send_key, self._receive_key = to_controller, to_target

    def _aad(self, kind: str) -> bytes:
        return _DOMAIN + b"/" + kind.encode() + b"\x00" + self.transcript

    def _sealed(self, kind: str, content: dict[str, Any]) -> Frame:
        # Counter nonces under a per-direction key: never repeated, and a replayed, reordered
        # or reflected message fails to open.
        nonce = self._sent.to_bytes(NONCE_LENGTH, "big")
        self._sent += 1
        box = AESGCM(self._send_key).encrypt(
            nonce, encode_frame(content).encode("utf-8"), self._aad(kind)
        )
        body = {"v": PROTOCOL, "kind": kind, "box": b64encode(box)}
        return {"type": "data", "payload": encode_frame(body)}

    def _open(self, message: Frame, kind: str) -> dict[str, Any]:
        body = json_object(data_payload(message))
        box = body.get("box")
        if body.get("v") != PROTOCOL or body.get("kind") != kind or not isinstance(box, str):
            raise PairingError("protocol_violation")
        nonce = self._received.to_bytes(NONCE_LENGTH, "big")
        try:
            plaintext = AESGCM(self._receive_key).decrypt(nonce, b64decode(box), self._aad(kind))
        except (B64Error, InvalidTag, ValueError) as exc:
            # The first sealed message is where a different password shows.
            first = self._received == 0
            raise PairingError("code_mismatch" if first else "decrypt_failed") from exc
        self._received += 1
        return json_object(plaintext)

    def _identity_frame(self) -> Frame:
        fields = signed_identity(
            self._signer, _DOMAIN, self.role, self.transcript, name=self._name, now=self._clock()
        )
        return self._sealed(
            "identity",
            {
                "protocol": PROTOCOL,
                "versions": list(SUPPORTED_VERSIONS),
                "role": self.role,
                "deviceId": device_id(self._signer.public_key),
                **fields,
            },
        )

    def _on_identity(self, message: Frame) -> None:
        fields = self._open(message, "identity")
        if fields.get("protocol") != PROTOCOL or fields.get("role") != self.peer_role:
            raise PairingError("role_mismatch" if "role" in fields else "protocol_violation")
        _int_list(fields.get("versions"))
        peer = verified_identity(
            fields, _DOMAIN, self.peer_role, self.transcript, self._signer.public_key
        )
        if fields.get("deviceId") != peer.device_id:
            raise PairingError("protocol_violation")
        self.peer = peer
        self._stage = "decide"

    def _on_finish(self, message: Frame) -> None:
        accepted = self._open(message, "finish").get("accepted")
        if accepted is False:
            raise PairingError("peer_declined")
        if accepted is not True:
            raise PairingError("protocol_violation")
        self._peer_accepted = True
        if self._stage == "finish":
            self._stage = "done"


class V3Controller(_Side):
    """``amesh invite CODE``: SPAKE2 side A."""

    role, peer_role = "controller", "target"
    _pake_class = SPAKE2_A

    def connect_frame(self) -> Frame:
        return {"type": "connect", "otc": self._code.routing}


class V3Target(_Side):
    """``amesh listen``: SPAKE2 side B."""

    role, peer_role = "target", "controller"
    _pake_class = SPAKE2_B

    def listen_frame(self) -> Frame:
        return {"type": "listen", "otc": self._code.routing}
