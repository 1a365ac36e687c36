"""A hostile relay in the middle of interactive pairing (weakness W1).

The relay is a small websockets server that runs one handshake leg with each peer, using our
own protocol objects to impersonate the other side, and grinds its free choices so that both
screens show the same code:

* v1: it finishes the target's leg first, so the target's SAS is fixed, then picks the fake
  target key for the controller's leg from a pool until the controller's SAS matches. The
  pool is the recorded attack's (pairing.json ``handshake_mitm_demo``: key #205429 of the
  reference grind), replayed against our clients with the recorded ephemeral keys — a full
  6-digit match, no reduced check. The attack succeeds: W1 is a property of the v1 wire.
* v2: the relay must commit to its ephemeral key on the target's leg before the target
  reveals its own, and must send its key on the controller's leg before the controller
  reveals its committed one. It grinds thousands of candidates anyway: a candidate other
  than the committed one fails the commitment check, and the committed one gives unrelated
  codes, so the target refuses.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from authmesh.core._b64 import b64decode
from authmesh.core._keys import PrivateKey
from authmesh.core._sas import compute_sas
from authmesh.core._tunnel import open_b64, session_key
from authmesh.pairing import (
    InviteOptions,
    ListenOptions,
    PairingError,
    PairingResult,
    PeerIdentity,
    invite,
    listen,
)
from authmesh.pairing._v1 import V1Controller, V1Target
from authmesh.pairing._v2 import V2Controller, V2Target
from tests.pairing.relays import STEP, Attack, hostile_relay, receive, send
from tests.support.vectorfiles import section

V2_GRIND_CANDIDATES = 500


def _key(hex_scalar: str) -> PrivateKey:
    return PrivateKey.from_scalar(bytes.fromhex(hex_scalar))


class Screens:
    """The operator: reads the controller's screen, types it on the target."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.code: asyncio.Future[str] = loop.create_future()
        self.controller_sas: asyncio.Future[str] = loop.create_future()
        self.target_outcome: asyncio.Future[object] = loop.create_future()

    def on_code(self, code: str, lifetime: float) -> None:
        self.code.set_result(code)

    def show_sas(self, sas: str, peer: PeerIdentity) -> None:
        self.controller_sas.set_result(sas)

    async def ask_sas(self, peer: PeerIdentity) -> str:
        return await asyncio.wait_for(self.controller_sas, STEP)


async def _pair(
    url: str,
    target_key: PrivateKey,
    controller_key: PrivateKey,
    screens: Screens | None = None,
    **options: Any,
) -> tuple[object, object, Screens]:
    screens = screens or Screens()
    protocol = 1 if options.pop("legacy", False) else 2
    target_eph = options.pop("target_eph", None)
    controller_eph = options.pop("controller_eph", None)
    listening = asyncio.create_task(
        listen(
            target_key,
            "prod-api-us-east-1",
            ListenOptions(
                relay_url=url,
                protocol=protocol,
                ask_sas=screens.ask_sas,
                on_code=screens.on_code,
                ephemeral_key=target_eph,
            ),
        )
    )
    listening.add_done_callback(
        lambda task: screens.target_outcome.set_result(task.exception() or task.result())
    )
    code = await asyncio.wait_for(screens.code, STEP)
    inviting = invite(
        code,
        controller_key,
        "MacBook Pro — dev",
        InviteOptions(
            relay_url=url,
            protocol=protocol,
            show_sas=screens.show_sas,
            ephemeral_key=controller_eph,
            **options,
        ),
    )
    target_result, controller_result = await asyncio.wait_for(
        asyncio.gather(listening, inviting, return_exceptions=True), 3 * STEP
    )
    return target_result, controller_result, screens


async def test_v1_recorded_grind_fools_both_screens() -> None:
    """W1 against our legacy implementation: both sides accept the relay's keys."""
    inputs = section("pairing.json", "handshake_transcript.inputs")
    relay_keys = {
        name: _key(value["private_key_hex"])
        for name, value in section("pairing.json", "handshake_mitm_demo.keys").items()
    }
    target_key, controller_key = (
        _key(inputs[side]["private_key_hex"]) for side in ("target", "controller")
    )
    pool = [PrivateKey.generate() for _ in range(200)] + [relay_keys["mitm_fake_target"]]
    tried: list[int] = []

    async def attack(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        # Target leg: pose as a controller; once the target's identity arrives its SAS is fixed.
        toward_target = V1Controller(
            relay_keys["mitm_fake_controller"],
            "MacBook Pro — dev",
            ephemeral=relay_keys["mitm_ephemeral_to_target"],
        )
        for frame in toward_target.on_target_ephemeral(await receive(target)):
            await send(target, frame)
        toward_target.on_target_identity(await receive(target))
        target_sas = toward_target.sas
        # Controller leg: pose as the target, then grind the fake target key.
        ephemeral = relay_keys["mitm_ephemeral_to_controller"]
        await send(controller, {"type": "data", "payload": ephemeral.public_key_b64})
        controller_ephemeral, controller_identity = (
            await receive(controller),
            await receive(controller),
        )
        shared = ephemeral.exchange(b64decode(controller_ephemeral["payload"]))
        identity = json.loads(open_b64(session_key(shared), controller_identity["payload"]))
        controller_public = b64decode(identity["publicKey"])
        for index, candidate in enumerate(pool):
            tried.append(index)
            if compute_sas(candidate.public_key, controller_public, shared) == target_sas:
                break
        toward_controller = V1Target(candidate, "prod-api-us-east-1", ephemeral=ephemeral)
        toward_controller.on_controller_ephemeral(controller_ephemeral)
        _, frames = toward_controller.on_controller_identity(controller_identity)
        await send(controller, frames[0])
        await receive(controller)  # the controller's done

    async with hostile_relay(attack, protocol=None) as url:
        target_result, controller_result, _ = await _pair(
            url,
            target_key,
            controller_key,
            legacy=True,
            target_eph=_key(inputs["target"]["ephemeral_private_key_hex"]),
            controller_eph=_key(inputs["controller"]["ephemeral_private_key_hex"]),
        )
    assert isinstance(target_result, PairingResult), target_result
    assert isinstance(controller_result, PairingResult), controller_result
    sas = section("pairing.json", "handshake_mitm_demo.grind.sas_on_both_screens")
    assert target_result.sas == controller_result.sas == sas
    # Both machines would now trust the relay's keys.
    assert target_result.peer.public_key == relay_keys["mitm_fake_controller"].public_key
    assert controller_result.peer.public_key == relay_keys["mitm_fake_target"].public_key
    assert len(tried) == len(pool)


def _v2_attack(outcomes: dict[str, object], *, lie_to_controller: bool) -> Attack:
    async def attack(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        fake_controller, fake_target = PrivateKey.generate(), PrivateKey.generate()
        # Target leg: the relay must commit before the target reveals E_T. It prepares many
        # candidates but can only send one commitment.
        candidates = [
            V2Controller(fake_controller, "MacBook Pro — dev", code)
            for _ in range(V2_GRIND_CANDIDATES)
        ]
        commits = [candidate.commit_frame() for candidate in candidates]
        await send(target, commits[0])
        # Controller leg: the relay must send its key before the controller reveals E_C.
        toward_controller = V2Target(fake_target, "prod-api-us-east-1", code)
        await send(controller, toward_controller.on_commit(await receive(controller)))
        toward_controller.on_reveal(await receive(controller))
        _, identity = toward_controller.on_controller_identity(await receive(controller))
        await send(controller, identity)
        controller_sas = toward_controller.sas
        # Grind: which candidate would give the target the controller's code?
        target_key_frame = await receive(target)
        replies = {index: c.on_target_key(target_key_frame) for index, c in enumerate(candidates)}
        matching = [i for i, c in enumerate(candidates) if c.sas == controller_sas]
        chosen = matching[0] if matching else 0
        outcomes["grind"] = {"matching": matching, "chosen": chosen}
        outcomes["relay_target_sas"] = candidates[chosen].sas
        outcomes["controller_sas"] = controller_sas
        for frame in replies[chosen]:
            await send(target, frame)
        try:
            candidates[chosen].on_target_identity(await receive(target))
            outcomes["target_verdict"] = candidates[chosen].on_confirm(await receive(target))
        except Exception as error:  # the target hung up (commitment mismatch)
            outcomes["target_leg_error"] = error
        if lie_to_controller:
            await send(controller, toward_controller.confirm_frame(True))
            toward_controller.on_receipt(await receive(controller))

    return attack


async def test_v2_commitment_defeats_the_grind() -> None:
    outcomes: dict[str, object] = {}
    target_key, controller_key = PrivateKey.generate(), PrivateKey.generate()
    async with hostile_relay(_v2_attack(outcomes, lie_to_controller=False), protocol=2) as url:
        target_result, controller_result, _ = await _pair(url, target_key, controller_key)
    assert isinstance(target_result, PairingError), target_result
    assert target_result.code in {"sas_mismatch", "commitment_mismatch"}
    grind = outcomes["grind"]
    assert isinstance(grind, dict)
    if grind["chosen"] == 0:
        # The committed candidate: the two screens showed unrelated codes.
        assert outcomes["relay_target_sas"] != outcomes["controller_sas"]
        assert outcomes["target_verdict"] is False
    else:
        assert target_result.code == "commitment_mismatch"
    # The relay kept quiet about the verdict: the controller saved nothing.
    assert isinstance(controller_result, PairingError)
    assert controller_result.code == "no_confirmation"


@pytest.mark.parametrize("operator_confirms", [False, None])
async def test_v2_relay_lying_about_the_verdict(operator_confirms: bool | None) -> None:
    """The target always refuses; the controller relies on the verdict message, which the
    relay (the controller's only peer) can forge. ``confirm_on_controller`` closes that:
    the operator, who just saw the target refuse, says so on the controller."""
    outcomes: dict[str, object] = {}
    target_key, controller_key = PrivateKey.generate(), PrivateKey.generate()
    screens = Screens()

    async def ask_operator(peer: PeerIdentity) -> bool:
        outcome = await asyncio.wait_for(screens.target_outcome, STEP)
        return isinstance(outcome, PairingResult)

    options: dict[str, Any] = {}
    if operator_confirms is False:
        options["confirm_on_controller"] = ask_operator
    async with hostile_relay(_v2_attack(outcomes, lie_to_controller=True), protocol=2) as url:
        target_result, controller_result, _ = await _pair(
            url, target_key, controller_key, screens, **options
        )
    assert isinstance(target_result, PairingError)
    if operator_confirms is False:
        assert isinstance(controller_result, PairingError)
        assert controller_result.code == "operator_declined"
    else:
        # Documented residual (docs/pairing.md "What v2 does not do"): without the operator's
        # confirmation the controller believes the forged verdict.
        assert isinstance(controller_result, PairingResult)
        assert controller_result.peer.public_key != target_key.public_key


async def test_v2_refuses_a_relay_that_does_not_confirm_the_protocol() -> None:
    """A reference relay drops the protocol field from peer_found: no silent v1 fallback."""

    async def idle(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        await asyncio.sleep(0)

    async with hostile_relay(idle, protocol=None) as url:
        target_result, controller_result, _ = await _pair(
            url, PrivateKey.generate(), PrivateKey.generate()
        )
    assert isinstance(target_result, PairingError)
    assert isinstance(controller_result, PairingError)
    assert target_result.code == controller_result.code == "relay_without_v2"
    assert "--legacy" in str(target_result)
