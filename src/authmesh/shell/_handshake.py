"""The shell handshake (spec shell §3) over a relay channel, for the target and the controller.

The steps and their order are :mod:`authmesh.core.shell._handshake_machine`'s; this module only
moves messages between a :class:`~authmesh.shell._channel.Channel` and the core object, reads
the clocks and the allow list when the core asks, and turns the core's :class:`Ended` into
:class:`~authmesh.shell._errors.SessionEnded`. Messages that follow the handshake stay queued
in the channel for the session (W2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from authmesh.core import AllowList, Device, PrivateKey, Signer
from authmesh.core.shell import ControllerHandshake, Established, TargetHandshake
from authmesh.core.shell._handshake_machine import AuthorizePeer, Ended, TargetMismatch
from authmesh.pairing import PairingError
from authmesh.pairing._relay_client import RelayClosed, RelayTimeout
from authmesh.shell._channel import Channel
from authmesh.shell._errors import SessionEnded

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "Established",
    "TargetMismatch",
    "run_controller_handshake",
    "run_target_handshake",
]

# Every handshake step waits at most this long (the reference's 30 s).
HANDSHAKE_TIMEOUT = 30.0


def _now() -> datetime:
    return datetime.now(UTC)


async def _until_authorization(
    channel: Channel,
    handshake: TargetHandshake | ControllerHandshake,
    clock: Callable[[], datetime],
) -> None:
    """Feed relay messages to ``handshake`` until the peer has proved its identity."""
    loop = asyncio.get_running_loop()
    while True:
        for text in handshake.messages_to_send():
            await channel.send_text(text)
        try:
            message = await channel.receive(max(0.0, handshake.next_deadline() - loop.time()))
        except RelayTimeout:
            handshake.tick(loop.time())  # raises TimeoutError once the deadline has passed
            continue
        except RelayClosed:
            raise
        except PairingError:  # not a JSON object: no conforming party sends one
            raise SessionEnded("invalid_message") from None
        step = handshake.receive(message, loop.time(), clock())
        if isinstance(step, Ended):
            raise SessionEnded(step.reason)
        if isinstance(step, AuthorizePeer):
            return


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
    :class:`~authmesh.shell._errors.SessionEnded` or
    :class:`~authmesh.pairing._relay_client.RelayClosed`.
    """
    handshake = TargetHandshake(
        signer,
        friendly_name,
        now=asyncio.get_running_loop().time(),
        timeout=timeout,
        ephemeral=ephemeral,
        envelope_nonce=envelope_nonce,
    )
    handshake.start()
    await _until_authorization(channel, handshake, clock)
    # Re-read on every handshake: a revocation or grant applies to the next session at once.
    handshake.authorize(allow_list())
    established = handshake.admit(admit(), clock())
    for text in handshake.messages_to_send():
        await channel.send_text(text)
    return established


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
    handshake = ControllerHandshake(
        signer,
        target,
        now=asyncio.get_running_loop().time(),
        timeout=timeout,
        identity=(friendly_name, term),
        ephemeral=ephemeral,
        envelope_nonce=envelope_nonce,
    )
    await _until_authorization(channel, handshake, clock)
    return handshake.authorize(allow_list())
