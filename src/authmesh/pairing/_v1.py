"""Legacy pairing (v1): the reference's handshake, byte for byte (pairing.md §3, §6 checklist).

Transport-free: each side is a small object fed the relay frames it receives and returning
the frames to send. The async drivers in :mod:`authmesh.pairing._interactive` move frames.
On top of the reference we add only local checks a conforming peer never notices (§3.3):
frame types, key encoding, a peer key equal to our own, a reflected ephemeral key.
Known weaknesses we cannot fix without breaking the wire — a hostile relay can make both
screens show the same code (W1), the controller never learns the verdict (W7) — are why v2
is the default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from authmesh.core import PrivateKey, Signer
from authmesh.core._b64 import b64encode
from authmesh.core._sas import compute_sas
from authmesh.core._selfsig import iso_timestamp, sign_selfsig, verify_selfsig
from authmesh.core._tunnel import TunnelError, open_b64, seal_b64, session_key
from authmesh.pairing._errors import PairingError
from authmesh.pairing._identity import (
    PeerIdentity,
    data_payload,
    friendly_name,
    peer_public_key,
)
from authmesh.pairing._relay_client import Frame, encode_frame, json_object

__all__ = ["PROTOCOL", "V1Controller", "V1Target", "identity_plaintext"]

PROTOCOL = 1


def identity_plaintext(signer: Signer, name: str, timestamp: str) -> str:
    """The identity JSON the reference sends: compact, key order fixed, non-ASCII raw."""
    public_key_b64 = b64encode(signer.public_key)
    return encode_frame(
        {
            "publicKey": public_key_b64,
            "friendlyName": name,
            "timestamp": timestamp,
            "selfSig": sign_selfsig(signer, public_key_b64, name, timestamp),
        }
    )


class _Side:
    def __init__(
        self,
        signer: Signer,
        name: str,
        *,
        clock: Callable[[], float] = time.time,
        ephemeral: PrivateKey | None = None,
        nonces: Iterator[bytes] | None = None,
    ) -> None:
        self._signer = signer
        self._name = name
        self._clock = clock
        self._ephemeral = ephemeral or PrivateKey.generate()
        self._nonces = nonces
        self._key: bytes | None = None
        self._shared: bytes | None = None
        self.sas = ""

    def _ephemeral_frame(self) -> Frame:
        return {"type": "data", "payload": self._ephemeral.public_key_b64}

    def _agree(self, message: Frame) -> None:
        peer_ephemeral = peer_public_key(data_payload(message), self._ephemeral.public_key)
        self._shared = self._ephemeral.exchange(peer_ephemeral)
        self._key = session_key(self._shared)

    def _identity_frame(self) -> Frame:
        assert self._key is not None, "identity sent before key agreement"
        plaintext = identity_plaintext(self._signer, self._name, iso_timestamp(self._clock()))
        nonce = next(self._nonces) if self._nonces is not None else None
        return {"type": "data", "payload": seal_b64(self._key, plaintext.encode(), nonce=nonce)}

    def _peer_identity(self, message: Frame) -> PeerIdentity:
        assert self._key is not None, "identity received before key agreement"
        try:
            plaintext = open_b64(self._key, data_payload(message))
        except TunnelError as exc:
            raise PairingError("decrypt_failed") from exc
        fields = json_object(plaintext)
        public_key_b64, timestamp, selfsig = (
            fields.get("publicKey"),
            fields.get("timestamp"),
            fields.get("selfSig"),
        )
        public_key = peer_public_key(public_key_b64, self._signer.public_key)
        name = friendly_name(fields.get("friendlyName"))
        if not isinstance(timestamp, str) or not isinstance(selfsig, str):
            raise PairingError("protocol_violation")
        assert isinstance(public_key_b64, str)
        if not verify_selfsig(public_key_b64, name, timestamp, selfsig):
            raise PairingError("bad_peer_signature")
        return PeerIdentity(public_key, name, timestamp)

    def _sas(self, target_public_key: bytes, controller_public_key: bytes) -> str:
        assert self._shared is not None
        return compute_sas(target_public_key, controller_public_key, self._shared)


class V1Target(_Side):
    """``amesh listen``: sends its ephemeral key first, its identity last (§3.2 steps 5, 8)."""

    def listen_frame(self, otc: str) -> Frame:
        return {"type": "listen", "otc": otc}

    def ephemeral_frame(self) -> Frame:
        return self._ephemeral_frame()

    def on_controller_ephemeral(self, message: Frame) -> None:
        self._agree(message)

    def on_controller_identity(self, message: Frame) -> tuple[PeerIdentity, list[Frame]]:
        """Verify the controller; returns it and the frames to send (identity, done)."""
        peer = self._peer_identity(message)
        self.sas = self._sas(self._signer.public_key, peer.public_key)
        return peer, [self._identity_frame(), {"type": "done"}]


class V1Controller(_Side):
    """``amesh invite``: answers with its ephemeral key and identity at once (§3.2 steps 6-7)."""

    def connect_frame(self, otc: str) -> Frame:
        return {"type": "connect", "otc": otc}

    def on_target_ephemeral(self, message: Frame) -> list[Frame]:
        self._agree(message)
        return [self._ephemeral_frame(), self._identity_frame()]

    def on_target_identity(self, message: Frame) -> tuple[PeerIdentity, list[Frame]]:
        """Verify the target; returns it and the frames to send (done)."""
        peer = self._peer_identity(message)
        self.sas = self._sas(peer.public_key, self._signer.public_key)
        return peer, [{"type": "done"}]
