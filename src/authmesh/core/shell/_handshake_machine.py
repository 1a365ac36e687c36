"""The shell handshake's steps (spec shell §3) as sans-I/O objects, one per side.

The wire is the reference's: the target sends its ephemeral key first, the controller answers
with its own and then its identity envelope, and the target reveals its identity only after it
has authorized the controller. Each object takes a received relay message with the time
``now`` (monotonic seconds, for the per-step deadline) and ``wall`` (UTC, for the identity
timestamp), queues what to send in :meth:`messages_to_send`, and enforces the order of the
steps itself: a step out of turn raises :class:`ShellHandshakeError` (``OUT_OF_ORDER``).

Beyond :mod:`authmesh.core.shell._handshake`'s crypto, the objects:

* dispatch relay messages by type, so a ``pong`` or unknown message is never read as a step
  (W8); ``done`` and relay ``error`` end the handshake (:class:`Ended`);
* check the claimed device id against the allow-list entry and return the entry (our names,
  never the peer's claims; S2, S8); the caller reads the allow list at :class:`AuthorizePeer`,
  so a revocation applies to the next handshake at once;
* pin the target on the controller: the answering key and id must be the entry it asked for,
  not just any allow-listed target (S4);
* carry the controller's ``TERM`` as an extra ``term`` member of its identity envelope,
  encrypted under the handshake key; reference agents ignore unknown members (W10).

Each step may wait at most ``timeout`` seconds: :meth:`next_deadline` says until when, and
:meth:`tick` raises :class:`TimeoutError` past it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from authmesh.core._allowlist import AllowList, Device
from authmesh.core._jsoncanon import JsonError, legacy_stringify, parse
from authmesh.core._keys import PrivateKey, device_id
from authmesh.core._selfsig import Signer
from authmesh.core._tunnel import TunnelError, open_blob, seal_blob
from authmesh.core.shell._cipher import Role, ShellCipher
from authmesh.core.shell._handshake import (
    HandshakeErrorCode,
    ShellHandshakeError,
    ShellIdentity,
    VerifiedPeer,
    authorize_peer,
    create_identity,
    derive_session_key,
    derive_temp_key,
    open_identity,
    seal_identity,
    shared_secret,
    verify_identity,
)
from authmesh.core.shell._wire import WireError, data_message, data_payload

__all__ = [
    "AuthorizePeer",
    "ControllerHandshake",
    "Ended",
    "Established",
    "HandshakeStep",
    "TargetHandshake",
    "TargetMismatch",
]

_TERM_FIELD = "term"
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class TargetMismatch(ShellHandshakeError):
    """The device that answered is not the target the controller asked for (S4)."""


class HandshakeStep(Enum):
    """Where a handshake stands; each side passes through its steps in this order."""

    START = "start"  # target only: its ephemeral key is not queued yet
    AWAIT_EPHEMERAL = "await_ephemeral"
    AWAIT_ENVELOPE = "await_envelope"
    AWAIT_AUTHORIZATION = "await_authorization"  # the caller looks the peer up
    AWAIT_ADMISSION = "await_admission"  # target only: a session slot is asked for
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Established:
    """A completed handshake: the session cipher and the peer's allow-list entry."""

    cipher: ShellCipher
    peer: Device
    term: str | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """The peer or the relay ended the handshake (``done``, ``peer_disconnected``, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class AuthorizePeer:
    """The peer proved its identity: call ``authorize`` with the current allow list."""

    peer: VerifiedPeer


class _Handshake(ABC):
    """What both sides share: the step, the deadline, the outgoing queue and the dispatch."""

    def __init__(
        self, signer: Signer, *, now: float, timeout: float, ephemeral: PrivateKey | None
    ) -> None:
        self._signer = signer
        self._timeout = timeout
        self._deadline = now + timeout
        self._ephemeral = ephemeral or PrivateKey.generate()
        self._outgoing: list[str] = []
        self._secret = b""
        self._temp_key = b""
        self._peer_ephemeral = b""
        self._verified: VerifiedPeer | None = None
        self.step = HandshakeStep.AWAIT_EPHEMERAL

    def messages_to_send(self) -> list[str]:
        """The relay messages queued since the last call, in order."""
        queued, self._outgoing = self._outgoing, []
        return queued

    def next_deadline(self) -> float:
        """When the step being waited for times out (monotonic seconds)."""
        return self._deadline

    def tick(self, now: float) -> None:
        """Raise :class:`TimeoutError` when the current step waited past its deadline."""
        if now >= self._deadline and self.step not in (HandshakeStep.DONE, HandshakeStep.FAILED):
            self.step = HandshakeStep.FAILED
            raise TimeoutError("the shell handshake timed out")

    def receive(
        self, message: dict[str, Any], now: float, wall: datetime
    ) -> AuthorizePeer | Ended | None:
        """Take one relay message; :class:`AuthorizePeer` once the peer proved its identity."""
        payload = self._payload(message, now)
        if not isinstance(payload, bytes):
            return payload
        try:
            if self.step is HandshakeStep.AWAIT_EPHEMERAL:
                self._agree(payload)
                self._answer_ephemeral(wall)
                self.step = HandshakeStep.AWAIT_ENVELOPE
                return None
            self._verified = self._accept_envelope(payload, wall)
        except ShellHandshakeError:
            self.step = HandshakeStep.FAILED
            raise
        self.step = HandshakeStep.AWAIT_AUTHORIZATION
        return AuthorizePeer(self._verified)

    @abstractmethod
    def _answer_ephemeral(self, wall: datetime) -> None:
        """Queue this side's answer to the peer's ephemeral key."""

    @abstractmethod
    def _accept_envelope(self, envelope: bytes, wall: datetime) -> VerifiedPeer:
        """The peer that the envelope proves, checked as this side requires."""

    def _payload(self, message: dict[str, Any], now: float) -> bytes | Ended | None:
        """The payload of a ``data`` message for the awaited step; None for ignored types."""
        kind = message.get("type")
        if kind in ("done", "error"):
            self.step = HandshakeStep.FAILED
            code = message.get("code") if kind == "error" else "done"
            return Ended(code if isinstance(code, str) else "error")
        if kind != "data":
            return None  # pong and unknown types are not handshake steps (W8)
        if self.step not in (HandshakeStep.AWAIT_EPHEMERAL, HandshakeStep.AWAIT_ENVELOPE):
            self._fail_out_of_order()
        try:
            payload = data_payload(message.get("payload"))
        except WireError:
            self.step = HandshakeStep.FAILED
            return Ended("invalid_payload")
        self._deadline = now + self._timeout
        return payload

    def _expect(self, step: HandshakeStep) -> None:
        if self.step is not step:
            self._fail_out_of_order()

    def _fail_out_of_order(self) -> None:
        step, self.step = self.step, HandshakeStep.FAILED
        raise ShellHandshakeError(
            HandshakeErrorCode.OUT_OF_ORDER,
            f"A handshake step arrived out of order (while {step.value}); the peer is not a "
            "compatible amesh client, so the session was refused.",
        )

    def _agree(self, peer_ephemeral: bytes) -> None:
        self._secret = shared_secret(self._ephemeral, peer_ephemeral)
        self._temp_key = derive_temp_key(self._secret)
        self._peer_ephemeral = peer_ephemeral

    def _own_identity(self, friendly_name: str, wall: datetime) -> ShellIdentity:
        return create_identity(
            self._signer,
            friendly_name,
            wall,
            own_ephemeral=self._ephemeral.public_key,
            peer_ephemeral=self._peer_ephemeral,
        )

    def _verify(self, envelope: bytes, wall: datetime) -> VerifiedPeer:
        identity = open_identity(self._temp_key, envelope)
        return verify_identity(
            identity,
            peer_ephemeral=self._peer_ephemeral,
            own_ephemeral=self._ephemeral.public_key,
            now=wall,
        )

    def _entry(self, allow_list: AllowList, role: Role) -> Device:
        """The allow-list entry of the verified peer, checked against its claimed id."""
        self._expect(HandshakeStep.AWAIT_AUTHORIZATION)
        peer = self._verified
        assert peer is not None
        entry = allow_list.find_by_public_key(peer.public_key_b64)
        try:
            if entry is not None and entry.device_id != peer.device_id:
                raise ShellHandshakeError(
                    HandshakeErrorCode.DEVICE_ID_MISMATCH,
                    "The peer's device id differs from its allow-list entry; re-pair the two "
                    "devices.",
                )
            authorize_peer(role, entry)
        except ShellHandshakeError:
            self.step = HandshakeStep.FAILED
            raise
        assert entry is not None
        return entry


class TargetHandshake(_Handshake):
    """The agent's side, started when the relay reports ``peer_found``.

    ``start`` queues our ephemeral key; ``receive`` takes the controller's key, then its
    envelope, after which it returns :class:`AuthorizePeer`; ``authorize`` checks the allow
    list; ``admit`` (the caller's answer: is a session slot free) reveals our identity and
    returns :class:`Established`. Nothing of ours beyond the ephemeral key is sent to a
    controller that is refused. ``ephemeral`` and ``envelope_nonce`` are fresh unless given.
    """

    def __init__(
        self,
        signer: Signer,
        friendly_name: str,
        *,
        now: float,
        timeout: float,
        ephemeral: PrivateKey | None = None,
        envelope_nonce: bytes | None = None,
    ) -> None:
        super().__init__(signer, now=now, timeout=timeout, ephemeral=ephemeral)
        self._friendly_name = friendly_name
        self._envelope_nonce = envelope_nonce
        self._envelope = b""
        self._entry_found: Device | None = None
        self.step = HandshakeStep.START

    def start(self) -> None:
        self._expect(HandshakeStep.START)
        self._outgoing.append(data_message(self._ephemeral.public_key))
        self.step = HandshakeStep.AWAIT_EPHEMERAL

    def _answer_ephemeral(self, wall: datetime) -> None:
        """Nothing: the target reveals its identity only once the controller is admitted."""

    def _accept_envelope(self, envelope: bytes, wall: datetime) -> VerifiedPeer:
        peer = self._verify(envelope, wall)
        self._envelope = envelope
        return peer

    def authorize(self, allow_list: AllowList) -> Device:
        """The controller's entry if it may open a shell here; raises when it may not."""
        self._entry_found = self._entry(allow_list, Role.TARGET)
        self.step = HandshakeStep.AWAIT_ADMISSION
        return self._entry_found

    def admit(self, admitted: bool, wall: datetime) -> Established:
        """Reveal our identity if ``admitted``; False refuses (every session slot is taken)."""
        self._expect(HandshakeStep.AWAIT_ADMISSION)
        entry = self._entry_found
        assert entry is not None
        if not admitted:
            self.step = HandshakeStep.FAILED
            raise ShellHandshakeError(
                HandshakeErrorCode.AT_CAPACITY,
                "Every session slot is taken (--max-sessions); the controller may retry when "
                "one ends.",
            )
        own = self._own_identity(self._friendly_name, wall)
        self._outgoing.append(
            data_message(seal_identity(self._temp_key, own, nonce=self._envelope_nonce))
        )
        key = derive_session_key(
            self._secret,
            target_device_id=device_id(self._signer.public_key),
            controller_device_id=entry.device_id,
        )
        self.step = HandshakeStep.DONE
        term = _envelope_term(self._temp_key, self._envelope)
        return Established(ShellCipher(key, Role.TARGET), entry, term)


class ControllerHandshake(_Handshake):
    """The controller's side, after the relay answered the ``shell`` request.

    ``receive`` takes the target's ephemeral key (queueing ours and our envelope, which
    carries ``term``), then the target's envelope, after which it returns
    :class:`AuthorizePeer`; ``authorize`` checks the allow list and returns
    :class:`Established`. Messages after the target's envelope are the session's: the caller
    keeps them for it. ``ephemeral`` and ``envelope_nonce`` are fresh unless given.
    """

    def __init__(
        self,
        signer: Signer,
        target: Device,
        *,
        now: float,
        timeout: float,
        identity: tuple[str, str | None],
        ephemeral: PrivateKey | None = None,
        envelope_nonce: bytes | None = None,
    ) -> None:
        """``identity`` is our friendly name and the ``TERM`` to carry (None: none)."""
        super().__init__(signer, now=now, timeout=timeout, ephemeral=ephemeral)
        self._target = target
        self._friendly_name, self._term = identity
        self._envelope_nonce = envelope_nonce

    def _answer_ephemeral(self, wall: datetime) -> None:
        self._outgoing.append(data_message(self._ephemeral.public_key))
        own = self._own_identity(self._friendly_name, wall)
        envelope = _seal_envelope(self._temp_key, own, self._term, self._envelope_nonce)
        self._outgoing.append(data_message(envelope))

    def _accept_envelope(self, envelope: bytes, wall: datetime) -> VerifiedPeer:
        return self._pinned(self._verify(envelope, wall))

    def _pinned(self, peer: VerifiedPeer) -> VerifiedPeer:
        target = self._target
        if peer.public_key_b64 != target.public_key or peer.device_id != target.device_id:
            raise TargetMismatch(
                HandshakeErrorCode.NOT_A_TARGET,
                f'A different device answered instead of "{target.friendly_name}"; the relay '
                "may be misrouting sessions, so the connection was refused.",
            )
        return peer

    def authorize(self, allow_list: AllowList) -> Established:
        """The session, if the answering target is one of ours; raises when it is not."""
        entry = self._entry(allow_list, Role.CONTROLLER)
        key = derive_session_key(
            self._secret,
            target_device_id=entry.device_id,
            controller_device_id=device_id(self._signer.public_key),
        )
        self.step = HandshakeStep.DONE
        return Established(ShellCipher(key, Role.CONTROLLER), entry)


def _seal_envelope(
    temp_key: bytes, identity: ShellIdentity, term: str | None, nonce: bytes | None
) -> bytes:
    if term is None or _TERM.fullmatch(term) is None:
        return seal_identity(temp_key, identity, nonce=nonce)
    document = parse(identity.to_json())
    assert isinstance(document, dict)
    document[_TERM_FIELD] = term
    return seal_blob(temp_key, legacy_stringify(document).encode("utf-8"), nonce=nonce)


def _envelope_term(temp_key: bytes, envelope: bytes) -> str | None:
    """The optional ``term`` member of an envelope that :func:`open_identity` accepted."""
    try:
        document = parse(open_blob(temp_key, envelope).decode("utf-8"))
    except (TunnelError, JsonError, UnicodeDecodeError):
        return None
    term = document.get(_TERM_FIELD) if isinstance(document, dict) else None
    return term if isinstance(term, str) and _TERM.fullmatch(term) else None
