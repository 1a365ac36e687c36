"""Interactive pairing over a relay: :func:`listen` (target) and :func:`invite` (controller).

``options.protocol`` chooses the exchange: 3 (the default, :mod:`authmesh.pairing._v3`: one
code, a PAKE, nothing to compare), 2 (:mod:`authmesh.pairing._v2`: a verification code typed
on the target) or 1 (the reference's legacy exchange). There is never a silent fallback: a
peer or relay that speaks another version ends in a :class:`PairingError` whose sentence says
what the alternative costs. Every relay read has a deadline; the protocol objects enforce
message order themselves, this module only moves frames and calls the operator's hooks.

Hooks are plain callables, sync or async. They run on the event loop, so a blocking prompt
should be wrapped (e.g. ``asyncio.to_thread(input, ...)``) to keep the socket alive.
Neither function writes anything: the caller records the returned :class:`PairingResult`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from authmesh.core import PrivateKey, Signer
from authmesh.core._otc import generate_otc, is_valid_otc
from authmesh.core._sas import sas_matches
from authmesh.pairing import _v1 as v1
from authmesh.pairing import _v2 as v2
from authmesh.pairing import _v3 as v3
from authmesh.pairing._code import PairingCode
from authmesh.pairing._errors import PairingError
from authmesh.pairing._hooks import call_hook
from authmesh.pairing._identity import PairingResult, PeerIdentity, Role, check_own_name
from authmesh.pairing._relay_client import Frame, RelayConnection, relay_error

__all__ = [
    "CODE_LIFETIME_SECONDS",
    "CONFIRM_TIMEOUT_SECONDS",
    "READ_TIMEOUT_SECONDS",
    "SAS_ATTEMPTS",
    "InviteOptions",
    "ListenOptions",
    "invite",
    "listen",
]

READ_TIMEOUT_SECONDS = 30.0  # the reference's per-read timeout (pairing.md §6.9)
CODE_LIFETIME_SECONDS = 60.0  # how long the target waits for a controller (relay session TTL)
# The operator reads a code on one machine and types it on the other meanwhile.
CONFIRM_TIMEOUT_SECONDS = 120.0
# The SAS is fixed once both sides committed, so re-typing it gives a relay no extra chance.
SAS_ATTEMPTS = 3
_CODE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class _Common:
    relay_url: str
    protocol: int = v3.PROTOCOL
    read_timeout: float = READ_TIMEOUT_SECONDS
    confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS
    on_peer_found: Callable[[], Any] | None = None
    clock: Callable[[], float] = time.time
    ephemeral_key: PrivateKey | None = None  # v1/v2 only, to reproduce recorded transcripts


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenOptions(_Common):
    """How ``listen`` runs. ``on_code(code, lifetime)`` fires once the relay holds the session;
    ``accept_peer(peer)`` decides on a verified controller (all versions; default yes);
    ``ask_sas(peer)`` returns what the operator typed (v1/v2; whitespace stripped), up to
    ``sas_attempts`` times, with ``on_sas_mismatch(attempts_left)`` between attempts."""

    on_code: Callable[[str, float], Any] | None = None
    accept_peer: Callable[[PeerIdentity], bool | Awaitable[bool]] | None = None
    ask_sas: Callable[[PeerIdentity], str | Awaitable[str]] | None = None
    on_sas_mismatch: Callable[[int], Any] | None = None
    sas_attempts: int = SAS_ATTEMPTS
    code_lifetime: float = CODE_LIFETIME_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteOptions(_Common):
    """How ``invite`` runs. ``show_sas(sas, peer)`` displays the v1/v2 verification code;
    ``on_peer(peer)`` shows the verified target (v3); ``confirm_on_controller(peer)`` is
    asked after a v2 acceptance, before anything is returned (see docs/pairing.md)."""

    show_sas: Callable[[str, PeerIdentity], Any] | None = None
    on_peer: Callable[[PeerIdentity], Any] | None = None
    confirm_on_controller: Callable[[PeerIdentity], bool | Awaitable[bool]] | None = None


def _check_peer_found(message: Frame, protocol: int) -> None:
    """The relay's answer once a peer joined; enforces the version chosen on this side."""
    kind = message.get("type")
    if kind == "error":
        if message.get("code") == "protocol_mismatch":
            raise PairingError(_mismatch_code(protocol, message.get("protocol")))
        raise relay_error(message)
    if kind != "peer_found":
        raise PairingError("protocol_violation")
    if protocol == v3.PROTOCOL:
        return  # v3 rides the reference's frames; the version is settled inside the channel
    announced = message.get("protocol", 1)
    if protocol == v1.PROTOCOL and announced != 1:
        raise PairingError("peer_requires_v2")
    if protocol == v2.PROTOCOL and announced != v2.PROTOCOL:
        # A reference relay drops our protocol field; the peer's speech is unknown.
        raise PairingError("relay_without_v2")


def _mismatch_code(protocol: int, theirs: object) -> str:
    """What our relay's ``protocol_mismatch`` means for this side (the relay may be lying)."""
    if protocol == v1.PROTOCOL:
        return "peer_requires_v2"
    if protocol == v2.PROTOCOL:
        return "peer_not_v2"
    return "peer_is_v2" if theirs == v2.PROTOCOL else "peer_is_legacy"


async def _open_session(relay: RelayConnection, options: ListenOptions) -> str:
    """``listen`` with a fresh routing code; one already in use on the relay is redrawn."""
    for _ in range(_CODE_ATTEMPTS):
        code = PairingCode.generate() if options.protocol == v3.PROTOCOL else None
        routing = code.routing if code else generate_otc()
        frame: Frame = {"type": "listen", "otc": routing}
        if options.protocol == v2.PROTOCOL:
            frame["protocol"] = v2.PROTOCOL
        await relay.send(frame)
        reply = await relay.receive(options.read_timeout)
        if reply.get("type") != "error":
            return str(code) if code else routing  # any non-error reply is the ack (§3.2)
        if reply.get("code") != "otc_in_use":
            raise relay_error(reply)
    raise PairingError("code_in_use")


async def listen(signer: Signer, friendly_name: str, options: ListenOptions) -> PairingResult:
    """Target side (``amesh listen``): show a code, pair with whoever proves it knows it."""
    check_own_name(friendly_name)
    async with await RelayConnection.open(options.relay_url) as relay:
        code = await _open_session(relay, options)
        await call_hook(options.on_code, code, options.code_lifetime)
        _check_peer_found(await relay.receive(options.code_lifetime), options.protocol)
        await call_hook(options.on_peer_found)
        if options.protocol == v3.PROTOCOL:
            parsed = PairingCode.parse(code)
            target = v3.V3Target(signer, friendly_name, parsed, clock=options.clock)
            return await _run_v3(relay, target, options, options.accept_peer)
        if options.protocol == v1.PROTOCOL:
            return await _listen_v1(relay, signer, friendly_name, options)
        return await _listen_v2(relay, code, signer, friendly_name, options)


async def invite(
    code: str, signer: Signer, friendly_name: str, options: InviteOptions
) -> PairingResult:
    """Controller side (``amesh invite CODE``).

    v3 returns once both sides verified each other. v2 returns only after the target's
    operator accepted the verification code (``confirmed=True``). v1 returns right after the
    handshake with ``confirmed=False``: the reference never reports the verdict.
    """
    check_own_name(friendly_name)
    if options.protocol == v3.PROTOCOL:
        parsed = PairingCode.parse(code)
    elif not is_valid_otc(code):
        raise PairingError("invalid_code")
    async with await RelayConnection.open(options.relay_url) as relay:
        if options.protocol == v3.PROTOCOL:
            controller = v3.V3Controller(signer, friendly_name, parsed, clock=options.clock)
            await relay.send(controller.connect_frame())
            _check_peer_found(await relay.receive(options.read_timeout), options.protocol)
            await call_hook(options.on_peer_found)
            return await _run_v3(relay, controller, options, None)
        if options.protocol == v1.PROTOCOL:
            return await _invite_v1(relay, code, signer, friendly_name, options)
        result = await _invite_v2(relay, code, signer, friendly_name, options)
    if options.confirm_on_controller is not None and not await call_hook(
        options.confirm_on_controller, result.peer
    ):
        raise PairingError("operator_declined")
    return result


async def _receive_into(
    relay: RelayConnection, side: v3.V3Controller | v3.V3Target, timeout: float
) -> None:
    for frame in side.receive(await relay.receive(timeout)):
        await relay.send(frame)


async def _run_v3(
    relay: RelayConnection,
    side: v3.V3Controller | v3.V3Target,
    options: _Common,
    accept_peer: Callable[[PeerIdentity], bool | Awaitable[bool]] | None,
) -> PairingResult:
    """PAKE, identities, finish: the object checks everything, this only moves frames."""
    await relay.send(side.start())
    try:
        await _receive_into(relay, side, options.read_timeout)
    except PairingError as error:
        if error.code == "peer_disconnected":  # a reference or pre-v3 peer gives up here
            raise PairingError("peer_left_before_v3") from error
        raise
    await _receive_into(relay, side, options.read_timeout)
    peer = side.peer
    if peer is None:  # the object verifies the identity before it sets the peer
        raise PairingError("protocol_violation")
    if isinstance(options, InviteOptions):
        await call_hook(options.on_peer, peer)
    if accept_peer is not None and not await call_hook(accept_peer, peer):
        await relay.send(side.decline())
        raise PairingError("operator_declined")
    await relay.send(side.accept())
    while not side.finished:
        await _receive_into(relay, side, options.confirm_timeout)
    peer_role: Role = "controller" if isinstance(side, v3.V3Target) else "target"
    return PairingResult(peer, peer_role, v2.PROTOCOL, "", confirmed=True, pairing=v3.PROTOCOL)


async def _accepted_by_operator(peer: PeerIdentity, sas: str, options: ListenOptions) -> bool:
    """v1/v2 target: the operator accepts the controller, then types its code (re-typing a
    typo up to ``sas_attempts`` times; the code is fixed, so that gives an attacker nothing)."""
    if options.accept_peer is not None and not await call_hook(options.accept_peer, peer):
        raise PairingError("operator_declined")
    for attempt in range(options.sas_attempts, 0, -1):
        entered = await call_hook(options.ask_sas, peer)
        if sas_matches(entered.strip() if isinstance(entered, str) else "", sas):
            return True
        if attempt > 1:
            await call_hook(options.on_sas_mismatch, attempt - 1)
    return False


async def _listen_v1(
    relay: RelayConnection, signer: Signer, name: str, options: ListenOptions
) -> PairingResult:
    target = v1.V1Target(signer, name, clock=options.clock, ephemeral=options.ephemeral_key)
    await relay.send(target.ephemeral_frame())
    target.on_controller_ephemeral(await relay.receive(options.read_timeout))
    peer, frames = target.on_controller_identity(await relay.receive(options.read_timeout))
    for frame in frames:
        await relay.send(frame)
    await relay.close()  # the reference prompts only after closing (§3.2 step 11)
    if not await _accepted_by_operator(peer, target.sas, options):
        raise PairingError("sas_mismatch")
    return PairingResult(peer, "controller", v1.PROTOCOL, target.sas, confirmed=True, pairing=1)


async def _listen_v2(
    relay: RelayConnection, code: str, signer: Signer, name: str, options: ListenOptions
) -> PairingResult:
    target = v2.V2Target(signer, name, code, clock=options.clock, ephemeral=options.ephemeral_key)
    await relay.send(target.on_commit(await relay.receive(options.read_timeout)))
    target.on_reveal(await relay.receive(options.read_timeout))
    peer, identity = target.on_controller_identity(await relay.receive(options.read_timeout))
    await relay.send(identity)
    accepted = await _accepted_by_operator(peer, target.sas, options)
    await relay.send(target.confirm_frame(accepted))
    if not accepted:
        raise PairingError("sas_mismatch")
    target.on_receipt(await relay.receive(options.confirm_timeout))
    return PairingResult(peer, "controller", v2.PROTOCOL, target.sas, confirmed=True, pairing=2)


async def _invite_v1(
    relay: RelayConnection, code: str, signer: Signer, name: str, options: InviteOptions
) -> PairingResult:
    controller = v1.V1Controller(signer, name, clock=options.clock, ephemeral=options.ephemeral_key)
    await relay.send(controller.connect_frame(code))
    _check_peer_found(await relay.receive(options.read_timeout), v1.PROTOCOL)
    await call_hook(options.on_peer_found)
    for frame in controller.on_target_ephemeral(await relay.receive(options.read_timeout)):
        await relay.send(frame)
    peer, frames = controller.on_target_identity(await relay.receive(options.read_timeout))
    for frame in frames:
        await relay.send(frame)
    await relay.close()
    await call_hook(options.show_sas, controller.sas, peer)
    return PairingResult(peer, "target", v1.PROTOCOL, controller.sas, confirmed=False, pairing=1)


async def _invite_v2(
    relay: RelayConnection, code: str, signer: Signer, name: str, options: InviteOptions
) -> PairingResult:
    controller = v2.V2Controller(
        signer, name, code, clock=options.clock, ephemeral=options.ephemeral_key
    )
    await relay.send(controller.connect_frame())
    _check_peer_found(await relay.receive(options.read_timeout), v2.PROTOCOL)
    await call_hook(options.on_peer_found)
    await relay.send(controller.commit_frame())
    for frame in controller.on_target_key(await relay.receive(options.read_timeout)):
        await relay.send(frame)
    peer = controller.on_target_identity(await relay.receive(options.read_timeout))
    await call_hook(options.show_sas, controller.sas, peer)
    try:
        accepted = controller.on_confirm(await relay.receive(options.confirm_timeout))
    except PairingError as error:
        if error.code in ("timeout", "relay_closed", "peer_disconnected", "session_expired"):
            raise PairingError("no_confirmation") from error
        raise
    if not accepted:
        raise PairingError("peer_rejected")
    await relay.send(controller.receipt_frame())
    await relay.send({"type": "done"})
    return PairingResult(peer, "target", v2.PROTOCOL, controller.sas, confirmed=True, pairing=2)
