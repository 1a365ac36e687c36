"""The shell handshake (spec shell §3) run over a relay channel, for the target and the controller.

The wire is the reference's: the target sends its ephemeral key first, the controller answers
with its own and then its identity envelope, and the target reveals its identity only after it
has authorized the controller. On top of :mod:`authmesh.core.shell.handshake` this layer:

* checks the claimed device id against the allow-list entry, and logs and returns the entry
  (our names, never the peer's claims; weaknesses S2, S8);
* pins the target on the controller: the answering key and id must be the entry it asked for,
  not just any allow-listed target (S4);
* dispatches relay messages by type, so a ``pong`` or ``error`` is never read as a handshake
  step (W8), and keeps every message that follows the handshake for the session (W2);
* carries the controller's ``TERM`` as an extra ``term`` member of its identity envelope. The
  envelope is encrypted under the handshake key and reference agents ignore unknown members,
  so the wire stays compatible (W10).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from authmesh.core.allowlist import AllowList, Device
from authmesh.core.jsoncanon import JsonError, legacy_stringify, parse
from authmesh.core.keys import PrivateKey, device_id
from authmesh.core.selfsig import Signer
from authmesh.core.shell.cipher import Role, ShellCipher
from authmesh.core.shell.handshake import (
    HandshakeErrorCode,
    ShellHandshakeError,
    ShellIdentity,
    authorize_peer,
    create_identity,
    derive_session_key,
    derive_temp_key,
    open_identity,
    seal_identity,
    shared_secret,
    verify_identity,
)
from authmesh.core.shell.wire import data_message
from authmesh.core.tunnel import TunnelError, open_blob, seal_blob
from authmesh.shell.channel import Channel, receive_data

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "Established",
    "TargetMismatch",
    "run_controller_handshake",
    "run_target_handshake",
]

# Every handshake read waits at most this long (the reference's 30 s).
HANDSHAKE_TIMEOUT = 30.0
_TERM_FIELD = "term"
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class TargetMismatch(ShellHandshakeError):
    """The device that answered is not the target the controller asked for (S4)."""


@dataclass(frozen=True, slots=True)
class Established:
    """A completed handshake: the session cipher and the peer's allow-list entry."""

    cipher: ShellCipher
    peer: Device
    term: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


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


def _entry_for(allow_list: AllowList, public_key_b64: str, claimed_id: str) -> Device | None:
    entry = allow_list.find_by_public_key(public_key_b64)
    if entry is not None and entry.device_id != claimed_id:
        raise ShellHandshakeError(
            HandshakeErrorCode.DEVICE_ID_MISMATCH,
            "The peer's device id differs from its allow-list entry; re-pair the two devices.",
        )
    return entry


async def run_target_handshake(
    channel: Channel,
    *,
    signer: Signer,
    friendly_name: str,
    allow_list: Callable[[], AllowList],
    timeout: float = HANDSHAKE_TIMEOUT,
    clock: Callable[[], datetime] = _now,
    ephemeral: PrivateKey | None = None,
    envelope_nonce: bytes | None = None,
    admit: Callable[[], bool] = lambda: True,
) -> Established:
    """The agent's side, started when the relay reports ``peer_found``.

    ``admit`` is asked once the controller is authorized, before the agent reveals its own
    identity; False refuses the session (the agent is at its session limit).

    ``clock``, ``ephemeral`` and ``envelope_nonce`` are fresh per call unless given (tests
    replaying the reference's recorded transcripts pin them). Raises
    :class:`ShellHandshakeError` when the controller is refused (nothing of ours has
    been revealed beyond the ephemeral key), :class:`TimeoutError`,
    :class:`~authmesh.shell.errors.SessionEnded` or
    :class:`~authmesh.pairing.relay_client.RelayClosed`.
    """
    ephemeral = ephemeral or PrivateKey.generate()
    await channel.send_text(data_message(ephemeral.public_key))
    peer_ephemeral = await receive_data(channel, timeout)
    secret = shared_secret(ephemeral, peer_ephemeral)
    temp_key = derive_temp_key(secret)
    envelope = await receive_data(channel, timeout)
    identity = open_identity(temp_key, envelope)
    peer = verify_identity(
        identity, peer_ephemeral=peer_ephemeral, own_ephemeral=ephemeral.public_key, now=clock()
    )
    # Re-read on every handshake: a revocation or grant applies to the next session at once.
    entry = _entry_for(allow_list(), peer.public_key_b64, peer.device_id)
    authorize_peer(Role.TARGET, entry)
    assert entry is not None
    if not admit():
        raise ShellHandshakeError(
            HandshakeErrorCode.AT_CAPACITY,
            "Every session slot is taken (--max-sessions); the controller may retry when one ends.",
        )
    own = create_identity(
        signer,
        friendly_name,
        clock(),
        own_ephemeral=ephemeral.public_key,
        peer_ephemeral=peer_ephemeral,
    )
    await channel.send_text(data_message(seal_identity(temp_key, own, nonce=envelope_nonce)))
    key = derive_session_key(
        secret, target_device_id=device_id(signer.public_key), controller_device_id=entry.device_id
    )
    return Established(ShellCipher(key, Role.TARGET), entry, _envelope_term(temp_key, envelope))


async def run_controller_handshake(
    channel: Channel,
    *,
    signer: Signer,
    friendly_name: str,
    target: Device,
    allow_list: Callable[[], AllowList],
    term: str | None,
    timeout: float = HANDSHAKE_TIMEOUT,
    clock: Callable[[], datetime] = _now,
    ephemeral: PrivateKey | None = None,
    envelope_nonce: bytes | None = None,
) -> Established:
    """The controller's side, after the relay answered the ``shell`` request.

    Messages that arrive after the target's envelope (its first session frames) stay queued
    in ``channel`` for the session. ``clock``, ``ephemeral`` and ``envelope_nonce`` as for
    :func:`run_target_handshake`.
    """
    target_ephemeral = await receive_data(channel, timeout)
    ephemeral = ephemeral or PrivateKey.generate()
    secret = shared_secret(ephemeral, target_ephemeral)
    temp_key = derive_temp_key(secret)
    await channel.send_text(data_message(ephemeral.public_key))
    own = create_identity(
        signer,
        friendly_name,
        clock(),
        own_ephemeral=ephemeral.public_key,
        peer_ephemeral=target_ephemeral,
    )
    await channel.send_text(data_message(_seal_envelope(temp_key, own, term, envelope_nonce)))
    identity = open_identity(temp_key, await receive_data(channel, timeout))
    peer = verify_identity(
        identity, peer_ephemeral=target_ephemeral, own_ephemeral=ephemeral.public_key, now=clock()
    )
    if peer.public_key_b64 != target.public_key or peer.device_id != target.device_id:
        raise TargetMismatch(
            HandshakeErrorCode.NOT_A_TARGET,
            f'A different device answered instead of "{target.friendly_name}"; the relay may '
            "be misrouting sessions, so the connection was refused.",
        )
    entry = _entry_for(allow_list(), peer.public_key_b64, peer.device_id)
    authorize_peer(Role.CONTROLLER, entry)
    assert entry is not None
    key = derive_session_key(
        secret, target_device_id=entry.device_id, controller_device_id=device_id(signer.public_key)
    )
    return Established(ShellCipher(key, Role.CONTROLLER), entry)
