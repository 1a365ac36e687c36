"""listen/invite end to end through a real relay process, v2 and legacy v1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from authmesh.core._keys import PrivateKey
from authmesh.pairing import (
    MAX_FRIENDLY_NAME_CHARS,
    InviteOptions,
    ListenOptions,
    PairingError,
    PairingResult,
    PeerIdentity,
    invite,
    listen,
)
from authmesh.pairing._interactive import SAS_ATTEMPTS
from tests.support.relayproc import RelayProcess

STEP = 10.0


class Operator:
    """The human: reads the code on one screen, types it (or a wrong one) on the other."""

    def __init__(self, *, typos: int = 0) -> None:
        self.code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.shown: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.typos = typos
        self.asked = 0
        self.target_saw: PeerIdentity | None = None
        self.controller_saw: PeerIdentity | None = None

    def on_code(self, code: str, lifetime: float) -> None:
        assert lifetime > 0
        self.code.set_result(code)

    def show_sas(self, sas: str, peer: PeerIdentity) -> None:
        self.controller_saw = peer
        self.shown.set_result(sas)

    async def ask_sas(self, peer: PeerIdentity) -> str:
        self.target_saw = peer
        sas = await asyncio.wait_for(self.shown, STEP)
        self.asked += 1
        if self.asked <= self.typos:
            return f"{(int(sas) + 1) % 1_000_000:06d}"
        return f"  {sas}\n"


async def start_listening(
    relay: RelayProcess, target_key: PrivateKey, operator: Operator, **options: Any
) -> tuple[asyncio.Task[Any], str]:
    """The target's ``listen`` running in a task, and the code it showed the operator."""
    listening = asyncio.create_task(
        listen(
            target_key,
            "target-box",
            ListenOptions(
                relay_url=relay.url,
                ask_sas=operator.ask_sas,
                on_code=operator.on_code,
                **options,
            ),
        )
    )
    return listening, await asyncio.wait_for(operator.code, STEP)


async def pair(
    relay: RelayProcess,
    target_key: PrivateKey,
    controller_key: PrivateKey,
    operator: Operator,
    *,
    protocol: int = 2,
) -> tuple[Any, Any]:
    listening, code = await start_listening(relay, target_key, operator, protocol=protocol)
    inviting = asyncio.create_task(
        invite(
            code,
            controller_key,
            "controller-laptop",
            InviteOptions(relay_url=relay.url, show_sas=operator.show_sas, protocol=protocol),
        )
    )
    results = await asyncio.wait_for(
        asyncio.gather(listening, inviting, return_exceptions=True), 3 * STEP
    )
    return results[0], results[1]


@pytest.mark.parametrize("pairing", [2, 3])
async def test_happy_path(
    fresh_relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey, pairing: int
) -> None:
    operator = Operator()
    target_result, controller_result = await pair(
        fresh_relay, target_key, controller_key, operator, protocol=pairing
    )
    assert isinstance(target_result, PairingResult), target_result
    assert isinstance(controller_result, PairingResult), controller_result
    assert target_result.pairing == controller_result.pairing == pairing
    # A v3 peer is an authmesh peer: the allow list records it as protocol 2.
    assert target_result.protocol == controller_result.protocol == 2
    assert target_result.confirmed and controller_result.confirmed
    assert target_result.sas == controller_result.sas
    assert target_result.peer_role == "controller" and controller_result.peer_role == "target"
    assert target_result.peer.public_key == controller_key.public_key
    assert controller_result.peer.public_key == target_key.public_key
    assert target_result.peer.friendly_name == "controller-laptop"
    assert controller_result.peer.device_id == target_key.device_id
    # v3: nothing to compare or type besides the code.
    assert operator.asked == (1 if pairing == 2 else 0)


async def test_v1_legacy_happy_path(
    fresh_relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey
) -> None:
    operator = Operator()
    target_result, controller_result = await pair(
        fresh_relay, target_key, controller_key, operator, protocol=1
    )
    assert isinstance(target_result, PairingResult), target_result
    assert isinstance(controller_result, PairingResult), controller_result
    assert target_result.protocol == controller_result.protocol == 1
    assert target_result.confirmed and not controller_result.confirmed  # W7: never told
    assert target_result.peer.public_key == controller_key.public_key
    assert controller_result.peer.public_key == target_key.public_key


@pytest.mark.parametrize("legacy", [False, True])
async def test_wrong_sas_saves_nothing(
    fresh_relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey, legacy: bool
) -> None:
    operator = Operator(typos=SAS_ATTEMPTS)
    protocol = 1 if legacy else 2
    target_result, controller_result = await pair(
        fresh_relay, target_key, controller_key, operator, protocol=protocol
    )
    assert isinstance(target_result, PairingError) and target_result.code == "sas_mismatch"
    if legacy:
        assert isinstance(controller_result, PairingResult) and not controller_result.confirmed
    else:
        # v2: the controller learns the verdict before it could write anything (W7).
        assert isinstance(controller_result, PairingError)
        assert controller_result.code == "peer_rejected"


@pytest.mark.parametrize("legacy", [False, True])
async def test_a_typo_in_the_sas_can_be_retyped(
    fresh_relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey, legacy: bool
) -> None:
    """Issue 13: the SAS is fixed once both sides committed, so a re-typed code costs nothing."""
    operator = Operator(typos=SAS_ATTEMPTS - 1)
    protocol = 1 if legacy else 2
    target_result, controller_result = await pair(
        fresh_relay, target_key, controller_key, operator, protocol=protocol
    )
    assert isinstance(target_result, PairingResult), target_result
    assert isinstance(controller_result, PairingResult), controller_result
    assert operator.asked == SAS_ATTEMPTS
    assert target_result.peer.public_key == controller_key.public_key


async def test_own_name_over_the_limit_is_refused_before_the_relay(
    fresh_relay: RelayProcess, target_key: PrivateKey
) -> None:
    with pytest.raises(PairingError) as raised:
        await listen(
            target_key,
            "n" * (MAX_FRIENDLY_NAME_CHARS + 1),
            ListenOptions(relay_url=fresh_relay.url),
        )
    assert raised.value.code == "name_too_long"


@pytest.mark.parametrize(
    ("legacy_target", "expected"), [(True, "peer_not_v2"), (False, "peer_requires_v2")]
)
async def test_no_silent_downgrade(
    fresh_relay: RelayProcess,
    target_key: PrivateKey,
    controller_key: PrivateKey,
    legacy_target: bool,
    expected: str,
) -> None:
    operator = Operator()
    listening, code = await start_listening(
        fresh_relay, target_key, operator, protocol=1 if legacy_target else 2, code_lifetime=3
    )
    with pytest.raises(PairingError) as raised:
        await invite(
            code,
            controller_key,
            "controller-laptop",
            InviteOptions(
                relay_url=fresh_relay.url,
                show_sas=operator.show_sas,
                protocol=2 if legacy_target else 1,
            ),
        )
    assert raised.value.code == expected
    # The relay tells the waiting target too, which stops at once with the opposite advice.
    with pytest.raises(PairingError) as told:
        await asyncio.wait_for(listening, STEP)
    opposite = {"peer_not_v2": "peer_requires_v2", "peer_requires_v2": "peer_not_v2"}
    assert told.value.code == opposite[expected]


async def test_v3_controller_meeting_a_legacy_target(
    fresh_relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey
) -> None:
    """The legacy target speaks first with a bare key; the v3 side names it, runs nothing."""
    operator = Operator()
    listening, code = await start_listening(fresh_relay, target_key, operator, protocol=1)
    with pytest.raises(PairingError) as raised:
        await invite(
            f"{code}-0000-0000",
            controller_key,
            "controller-laptop",
            InviteOptions(relay_url=fresh_relay.url),
        )
    assert raised.value.code == "peer_is_legacy"
    assert "hostile relay" in str(raised.value)
    with pytest.raises(PairingError):
        await asyncio.wait_for(listening, STEP)


async def test_v3_target_meeting_a_legacy_controller(
    fresh_relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey
) -> None:
    """A legacy controller (as the reference's) gives up on the v3 message and leaves."""
    operator = Operator()
    listening, code = await start_listening(fresh_relay, target_key, operator, protocol=3)
    inviting = invite(
        code.split("-")[0],
        controller_key,
        "controller-laptop",
        InviteOptions(relay_url=fresh_relay.url, protocol=1, show_sas=operator.show_sas),
    )
    target_result, controller_result = await asyncio.wait_for(
        asyncio.gather(listening, inviting, return_exceptions=True), 3 * STEP
    )
    assert isinstance(controller_result, PairingError), controller_result
    assert isinstance(target_result, PairingError), target_result
    assert target_result.code == "peer_left_before_v3"
