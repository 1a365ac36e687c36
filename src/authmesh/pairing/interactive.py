"""Interactive pairing over a relay: :func:`listen` (target) and :func:`invite` (controller).

Both speak pairing v2 unless ``legacy=True`` selects the reference's v1 exchange. The
protocol is announced in ``listen``/``connect`` and confirmed by the relay's ``peer_found``;
it is never downgraded silently — a mismatch ends in a :class:`PairingError` that tells the
operator which flag to use. Every relay read has a deadline.

UI hooks are plain callables, sync or async. They run on the event loop, so a blocking
prompt should be wrapped (e.g. ``asyncio.to_thread(input, ...)``) to keep the socket alive.
Neither function writes anything: the caller records the returned :class:`PairingResult`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from authmesh.core.keys import PrivateKey
from authmesh.core.otc import generate_otc, is_valid_otc
from authmesh.core.sas import sas_matches
from authmesh.core.selfsig import Signer
from authmesh.pairing import v1, v2
from authmesh.pairing.errors import PairingError
from authmesh.pairing.hooks import call_hook
from authmesh.pairing.identity import PairingResult, PeerIdentity
from authmesh.pairing.relay_client import RelayConnection, relay_error

__all__ = [
    "CODE_LIFETIME_SECONDS",
    "CONFIRM_TIMEOUT_SECONDS",
    "READ_TIMEOUT_SECONDS",
    "invite",
    "listen",
]

READ_TIMEOUT_SECONDS = 30.0  # the reference's per-read timeout (pairing.md §6.9)
CODE_LIFETIME_SECONDS = 60.0  # how long the target waits for a controller (relay session TTL)
# v2: the operator reads the code on one machine and types it on the other meanwhile.
CONFIRM_TIMEOUT_SECONDS = 120.0
_CODE_ATTEMPTS = 3


def _check_peer_found(message: dict[str, Any], *, legacy: bool) -> None:
    """The relay's answer to listen/connect once a peer joined; enforces the negotiated version."""
    kind = message.get("type")
    if kind == "error":
        if message.get("code") == "protocol_mismatch":
            raise PairingError("peer_requires_v2" if legacy else "peer_is_legacy")
        raise relay_error(message)
    if kind != "peer_found":
        raise PairingError("protocol_violation")
    announced = message.get("protocol", 1)
    if legacy and announced != 1:
        raise PairingError("peer_requires_v2")
    if not legacy and announced != v2.PROTOCOL:
        # A reference relay drops our protocol field; the peer's speech is unknown.
        raise PairingError("relay_without_v2")


async def listen(
    signer: Signer,
    friendly_name: str,
    *,
    relay_url: str,
    ask_sas: Callable[[PeerIdentity], str | Awaitable[str]],
    on_code: Callable[[str, float], Any] | None = None,
    on_peer_found: Callable[[], Any] | None = None,
    legacy: bool = False,
    code_lifetime: float = CODE_LIFETIME_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS,
    clock: Callable[[], float] = time.time,
    ephemeral_key: PrivateKey | None = None,
) -> PairingResult:
    """Target side (``amesh listen``): show a code, pair with whoever joins, check the SAS.

    ``on_code(code, lifetime_seconds)`` fires once the relay holds the session;
    ``ask_sas(peer)`` returns what the operator typed (whitespace is stripped).
    ``ephemeral_key`` exists only to reproduce recorded transcripts; leave it None.
    """
    async with await RelayConnection.open(relay_url) as relay:
        code = await _open_session(relay, legacy=legacy, read_timeout=read_timeout)
        await call_hook(on_code, code, code_lifetime)
        _check_peer_found(await relay.receive(code_lifetime), legacy=legacy)
        await call_hook(on_peer_found)
        if legacy:
            return await _listen_v1(
                relay, signer, friendly_name, ask_sas, read_timeout, clock, ephemeral_key
            )
        return await _listen_v2(
            relay,
            code,
            signer,
            friendly_name,
            ask_sas,
            read_timeout,
            confirm_timeout,
            clock,
            ephemeral_key,
        )


async def _open_session(relay: RelayConnection, *, legacy: bool, read_timeout: float) -> str:
    """``listen`` with a fresh code; a code already in use on the relay is simply redrawn."""
    for _ in range(_CODE_ATTEMPTS):
        code = generate_otc()
        frame: dict[str, Any] = {"type": "listen", "otc": code}
        if not legacy:
            frame["protocol"] = v2.PROTOCOL
        await relay.send(frame)
        reply = await relay.receive(read_timeout)
        if reply.get("type") != "error":
            return code  # the reference accepts any non-error reply as the ack (§3.2 step 2)
        if reply.get("code") != "otc_in_use":
            raise relay_error(reply)
    raise PairingError("code_in_use")


async def _ask(ask_sas: Callable[[PeerIdentity], str | Awaitable[str]], peer: PeerIdentity) -> str:
    entered = await call_hook(ask_sas, peer)
    return entered.strip() if isinstance(entered, str) else ""


async def _listen_v1(
    relay: RelayConnection,
    signer: Signer,
    name: str,
    ask_sas: Callable[[PeerIdentity], str | Awaitable[str]],
    read_timeout: float,
    clock: Callable[[], float],
    ephemeral_key: PrivateKey | None,
) -> PairingResult:
    target = v1.V1Target(signer, name, clock=clock, ephemeral=ephemeral_key)
    await relay.send(target.ephemeral_frame())
    target.on_controller_ephemeral(await relay.receive(read_timeout))
    peer, frames = target.on_controller_identity(await relay.receive(read_timeout))
    for frame in frames:
        await relay.send(frame)
    await relay.close()  # the reference prompts only after closing (§3.2 step 11)
    if not sas_matches(await _ask(ask_sas, peer), target.sas):
        raise PairingError("sas_mismatch")
    return PairingResult(peer, "controller", v1.PROTOCOL, target.sas, confirmed=True)


async def _listen_v2(
    relay: RelayConnection,
    code: str,
    signer: Signer,
    name: str,
    ask_sas: Callable[[PeerIdentity], str | Awaitable[str]],
    read_timeout: float,
    confirm_timeout: float,
    clock: Callable[[], float],
    ephemeral_key: PrivateKey | None,
) -> PairingResult:
    target = v2.V2Target(signer, name, code, clock=clock, ephemeral=ephemeral_key)
    await relay.send(target.on_commit(await relay.receive(read_timeout)))
    target.on_reveal(await relay.receive(read_timeout))
    peer, identity = target.on_controller_identity(await relay.receive(read_timeout))
    await relay.send(identity)
    accepted = sas_matches(await _ask(ask_sas, peer), target.sas)
    await relay.send(target.confirm_frame(accepted))
    if not accepted:
        raise PairingError("sas_mismatch")
    target.on_receipt(await relay.receive(confirm_timeout))
    return PairingResult(peer, "controller", v2.PROTOCOL, target.sas, confirmed=True)


async def invite(
    code: str,
    signer: Signer,
    friendly_name: str,
    *,
    relay_url: str,
    show_sas: Callable[[str, PeerIdentity], Any],
    on_peer_found: Callable[[], Any] | None = None,
    confirm_on_controller: Callable[[PeerIdentity], bool | Awaitable[bool]] | None = None,
    legacy: bool = False,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS,
    clock: Callable[[], float] = time.time,
    ephemeral_key: PrivateKey | None = None,
) -> PairingResult:
    """Controller side (``amesh invite CODE``): join, show the SAS, wait for the verdict.

    v2 returns only after the target's operator accepted the code (``confirmed=True``);
    a rejection raises ``peer_rejected``. ``confirm_on_controller(peer)``, if given, is asked
    after that acceptance — an operator "yes, the target says paired" that defends against
    a relay lying about the verdict (see docs/pairing.md). v1 returns right after the
    handshake with ``confirmed=False``: the reference never reports the verdict.
    """
    if not is_valid_otc(code):
        raise PairingError("invalid_code")
    async with await RelayConnection.open(relay_url) as relay:
        if legacy:
            return await _invite_v1(
                relay,
                code,
                signer,
                friendly_name,
                show_sas,
                on_peer_found,
                read_timeout,
                clock,
                ephemeral_key,
            )
        result = await _invite_v2(
            relay,
            code,
            signer,
            friendly_name,
            show_sas,
            on_peer_found,
            read_timeout,
            confirm_timeout,
            clock,
            ephemeral_key,
        )
    if confirm_on_controller is not None and not await call_hook(
        confirm_on_controller, result.peer
    ):
        raise PairingError("operator_declined")
    return result


async def _invite_v1(
    relay: RelayConnection,
    code: str,
    signer: Signer,
    name: str,
    show_sas: Callable[[str, PeerIdentity], Any],
    on_peer_found: Callable[[], Any] | None,
    read_timeout: float,
    clock: Callable[[], float],
    ephemeral_key: PrivateKey | None,
) -> PairingResult:
    controller = v1.V1Controller(signer, name, clock=clock, ephemeral=ephemeral_key)
    await relay.send(controller.connect_frame(code))
    _check_peer_found(await relay.receive(read_timeout), legacy=True)
    await call_hook(on_peer_found)
    for frame in controller.on_target_ephemeral(await relay.receive(read_timeout)):
        await relay.send(frame)
    peer, frames = controller.on_target_identity(await relay.receive(read_timeout))
    for frame in frames:
        await relay.send(frame)
    await relay.close()
    await call_hook(show_sas, controller.sas, peer)
    return PairingResult(peer, "target", v1.PROTOCOL, controller.sas, confirmed=False)


async def _invite_v2(
    relay: RelayConnection,
    code: str,
    signer: Signer,
    name: str,
    show_sas: Callable[[str, PeerIdentity], Any],
    on_peer_found: Callable[[], Any] | None,
    read_timeout: float,
    confirm_timeout: float,
    clock: Callable[[], float],
    ephemeral_key: PrivateKey | None,
) -> PairingResult:
    controller = v2.V2Controller(signer, name, code, clock=clock, ephemeral=ephemeral_key)
    await relay.send(controller.connect_frame())
    _check_peer_found(await relay.receive(read_timeout), legacy=False)
    await call_hook(on_peer_found)
    await relay.send(controller.commit_frame())
    for frame in controller.on_target_key(await relay.receive(read_timeout)):
        await relay.send(frame)
    peer = controller.on_target_identity(await relay.receive(read_timeout))
    await call_hook(show_sas, controller.sas, peer)
    try:
        accepted = controller.on_confirm(await relay.receive(confirm_timeout))
    except PairingError as error:
        if error.code in ("timeout", "relay_closed", "peer_disconnected", "session_expired"):
            raise PairingError("no_confirmation") from error
        raise
    if not accepted:
        raise PairingError("peer_rejected")
    await relay.send(controller.receipt_frame())
    await relay.send({"type": "done"})
    return PairingResult(peer, "target", v2.PROTOCOL, controller.sas, confirmed=True)
