"""listen/invite end to end through a real relay process, v2 and legacy v1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from authmesh.core.keys import PrivateKey
from authmesh.pairing import PairingError, PairingResult, PeerIdentity, invite, listen
from tests.relayproc import RelayProcess

STEP = 10.0


class Operator:
    """The human: reads the code on one screen, types it (or a wrong one) on the other."""

    def __init__(self, *, typo: bool = False) -> None:
        self.code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.shown: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.typo = typo
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
        if self.typo:
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
            relay_url=relay.url,
            ask_sas=operator.ask_sas,
            on_code=operator.on_code,
            **options,
        )
    )
    return listening, await asyncio.wait_for(operator.code, STEP)


async def pair(
    relay: RelayProcess,
    target_key: PrivateKey,
    controller_key: PrivateKey,
    operator: Operator,
    *,
    legacy_target: bool = False,
    legacy_controller: bool = False,
) -> tuple[Any, Any]:
    listening, code = await start_listening(relay, target_key, operator, legacy=legacy_target)
    inviting = asyncio.create_task(
        invite(
            code,
            controller_key,
            "controller-laptop",
            relay_url=relay.url,
            show_sas=operator.show_sas,
            legacy=legacy_controller,
        )
    )
    results = await asyncio.wait_for(
        asyncio.gather(listening, inviting, return_exceptions=True), 3 * STEP
    )
    return results[0], results[1]


async def test_v2_happy_path(
    relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey
) -> None:
    operator = Operator()
    target_result, controller_result = await pair(relay, target_key, controller_key, operator)
    assert isinstance(target_result, PairingResult), target_result
    assert isinstance(controller_result, PairingResult), controller_result
    assert target_result.protocol == controller_result.protocol == 2
    assert target_result.confirmed and controller_result.confirmed
    assert target_result.sas == controller_result.sas
    assert target_result.peer_role == "controller" and controller_result.peer_role == "target"
    assert target_result.peer.public_key == controller_key.public_key
    assert controller_result.peer.public_key == target_key.public_key
    assert target_result.peer.friendly_name == "controller-laptop"
    assert controller_result.peer.device_id == target_key.device_id


async def test_v1_legacy_happy_path(
    relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey
) -> None:
    operator = Operator()
    target_result, controller_result = await pair(
        relay, target_key, controller_key, operator, legacy_target=True, legacy_controller=True
    )
    assert isinstance(target_result, PairingResult), target_result
    assert isinstance(controller_result, PairingResult), controller_result
    assert target_result.protocol == controller_result.protocol == 1
    assert target_result.confirmed and not controller_result.confirmed  # W7: never told
    assert target_result.peer.public_key == controller_key.public_key
    assert controller_result.peer.public_key == target_key.public_key


@pytest.mark.parametrize("legacy", [False, True])
async def test_wrong_sas_saves_nothing(
    relay: RelayProcess, target_key: PrivateKey, controller_key: PrivateKey, legacy: bool
) -> None:
    operator = Operator(typo=True)
    target_result, controller_result = await pair(
        relay, target_key, controller_key, operator, legacy_target=legacy, legacy_controller=legacy
    )
    assert isinstance(target_result, PairingError) and target_result.code == "sas_mismatch"
    if legacy:
        assert isinstance(controller_result, PairingResult) and not controller_result.confirmed
    else:
        # v2: the controller learns the verdict before it could write anything (W7).
        assert isinstance(controller_result, PairingError)
        assert controller_result.code == "peer_rejected"


@pytest.mark.parametrize(
    ("legacy_target", "expected"), [(True, "peer_is_legacy"), (False, "peer_requires_v2")]
)
async def test_no_silent_downgrade(
    relay: RelayProcess,
    target_key: PrivateKey,
    controller_key: PrivateKey,
    legacy_target: bool,
    expected: str,
) -> None:
    operator = Operator()
    listening, code = await start_listening(
        relay, target_key, operator, legacy=legacy_target, code_lifetime=3
    )
    with pytest.raises(PairingError) as raised:
        await invite(
            code,
            controller_key,
            "controller-laptop",
            relay_url=relay.url,
            show_sas=operator.show_sas,
            legacy=not legacy_target,
        )
    assert raised.value.code == expected
    # The relay tells the waiting target too, which stops at once with the opposite advice.
    with pytest.raises(PairingError) as told:
        await asyncio.wait_for(listening, STEP)
    opposite = {"peer_is_legacy": "peer_requires_v2", "peer_requires_v2": "peer_is_legacy"}
    assert told.value.code == opposite[expected]
