"""Delivering a key rotation through the relay (``amesh rotate --notify``).

The rotating device opens a relay session with a fresh six-digit code
(:func:`offer_rotation`); a peer that trusts its old key joins with that code
(:func:`receive_rotation`). The rotating device sends its chain, which the peer checks
and applies exactly as a file from ``amesh rotate --export`` (both keys' signatures, the
sequence rules of :mod:`authmesh.core._rotation`); the peer answers with an
acknowledgement signed by its own key over the new key and ``seq``, which the rotating
device checks against its allow list.

The relay is untrusted: it cannot forge a chain (it has neither key) or an
acknowledgement (it has no peer key). It can drop, delay or replay messages; a replayed
chain is either already applied or refused, and a missing acknowledgement only means the
rotating device reports no confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authmesh.core import (
    Device,
    InvalidKeyError,
    RotationError,
    RotationStatement,
    Signer,
    public_key_from_b64,
)
from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode
from authmesh.core._keys import verify
from authmesh.core._otc import is_valid_otc
from authmesh.core._rotation import ACK_TYPE, ack_message, chain_document, chain_from_document
from authmesh.pairing import _v2 as v2
from authmesh.pairing._errors import PairingError
from authmesh.pairing._hooks import call_hook
from authmesh.pairing._identity import data_payload
from authmesh.pairing._interactive import (
    CODE_LIFETIME_SECONDS,
    READ_TIMEOUT_SECONDS,
    ListenOptions,
    _check_peer_found,
    _open_session,
)
from authmesh.pairing._relay_client import RelayConnection, encode_frame, json_object

__all__ = ["NotifyError", "offer_rotation", "receive_rotation"]


class NotifyError(Exception):
    """The other side's message was refused; the message is one sentence for the operator."""


async def _next_data(relay: RelayConnection, timeout: float) -> dict[str, Any]:
    """The peer's next ``data`` payload, parsed as a JSON object."""
    return json_object(data_payload(await relay.receive(timeout)))


def _check_ack(
    ack: dict[str, Any], statement: RotationStatement, trusted: Callable[[str], Device | None]
) -> Device:
    peer_key, signature = ack.get("publicKey"), ack.get("sig")
    if ack.get("type") != ACK_TYPE or not isinstance(peer_key, str):
        raise NotifyError("The peer did not confirm the rotation; check `amesh list` there.")
    peer = trusted(peer_key)
    if peer is None:
        raise NotifyError(
            "A device this machine does not trust answered the rotation; its confirmation "
            "was ignored. Check `amesh list` on the peer."
        )
    try:
        raw_key = public_key_from_b64(peer_key)
        valid = isinstance(signature, str) and verify(
            raw_key, b64decode(signature), ack_message(statement.new_key, statement.seq, peer_key)
        )
    except (InvalidKeyError, B64Error):
        valid = False
    if not valid:
        raise NotifyError("The peer's confirmation is not validly signed; it was ignored.")
    return peer


async def offer_rotation(
    chain: tuple[RotationStatement, ...],
    trusted: Callable[[str], Device | None],
    *,
    relay_url: str,
    on_code: Callable[[str, float], Any] | None = None,
    code_lifetime: float = CODE_LIFETIME_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> Device:
    """Rotating side: wait for one peer, send it the chain, return the peer that confirmed.

    ``trusted(public_key_b64)`` looks the confirming peer up in this device's allow list.
    """
    async with await RelayConnection.open(relay_url) as relay:
        options = ListenOptions(
            relay_url=relay_url, protocol=v2.PROTOCOL, read_timeout=read_timeout
        )
        code = await _open_session(relay, options)
        await call_hook(on_code, code, code_lifetime)
        _check_peer_found(await relay.receive(code_lifetime), v2.PROTOCOL)
        payload = encode_frame(chain_document(chain))
        await relay.send({"type": "data", "payload": payload})
        peer = _check_ack(await _next_data(relay, read_timeout), chain[-1], trusted)
        await relay.send({"type": "done"})
    return peer


async def receive_rotation(
    code: str,
    signer: Signer,
    apply: Callable[[tuple[RotationStatement, ...]], Device],
    *,
    relay_url: str,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> Device:
    """Peer side: join ``code``, apply the chain received with ``apply``, confirm it signed.

    ``apply`` raises (e.g. a store error) to refuse the chain; nothing is confirmed then.
    """
    if not is_valid_otc(code):
        raise PairingError("invalid_code")
    async with await RelayConnection.open(relay_url) as relay:
        await relay.send({"type": "connect", "otc": code, "protocol": v2.PROTOCOL})
        _check_peer_found(await relay.receive(read_timeout), v2.PROTOCOL)
        try:
            chain = chain_from_document(await _next_data(relay, read_timeout))
        except RotationError:
            raise NotifyError(
                "The other machine sent something that is not a rotation chain; nothing was "
                "changed."
            ) from None
        entry = apply(chain)
        own_key = b64encode(signer.public_key)
        signature = signer.sign(ack_message(chain[-1].new_key, chain[-1].seq, own_key))
        ack = {"type": ACK_TYPE, "publicKey": own_key, "sig": b64url_encode(signature)}
        await relay.send({"type": "data", "payload": encode_frame(ack)})
        await relay.send({"type": "done"})
    return entry
