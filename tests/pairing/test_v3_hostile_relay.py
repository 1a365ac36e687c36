"""Pairing v3 against a hostile relay, with the real ``listen``/``invite`` on both ends.

The relay sees the routing code and every frame. Each attack below must end in a
:class:`PairingError` on both machines (so the CLI saves nothing on either), and the one
attack with any chance — running its own PAKE with each side — wins only by guessing the
password, with the probability computed from the code format.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from authmesh.core._b64 import b64encode
from authmesh.core._keys import PrivateKey
from authmesh.pairing import (
    InviteOptions,
    ListenOptions,
    PairingCode,
    PairingError,
    PairingResult,
    invite,
    listen,
)
from authmesh.pairing._code import PASSWORD_DIGITS
from tests.pairing.relays import (
    STEP,
    Attack,
    forwarding_relay,
    hostile_relay,
    pake_impostor,
    receive,
    send,
)

Frame = dict[str, Any]
Outcomes = tuple[object, object]


async def _pair(url: str, *, target_accepts: bool = True) -> Outcomes:
    """listen + invite through ``url``; returns (target outcome, controller outcome)."""
    code: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    listening = asyncio.create_task(
        listen(
            PrivateKey.generate(),
            "server",
            ListenOptions(
                relay_url=url,
                on_code=lambda text, _: code.set_result(text),
                accept_peer=lambda peer: target_accepts,
                read_timeout=STEP,
                confirm_timeout=STEP,
            ),
        )
    )
    inviting = invite(
        await asyncio.wait_for(code, STEP),
        PrivateKey.generate(),
        "laptop",
        InviteOptions(relay_url=url, read_timeout=STEP, confirm_timeout=STEP),
    )
    target, controller = await asyncio.wait_for(
        asyncio.gather(listening, inviting, return_exceptions=True), 4 * STEP
    )
    return target, controller


def _failed(outcome: object, *codes: str) -> None:
    assert isinstance(outcome, PairingError), outcome
    assert outcome.code in codes, outcome.code


async def _pump(source: ServerConnection, sink: ServerConnection, log: list[Frame]) -> None:
    try:
        while True:
            frame = await receive(source)
            log.append(frame)
            await send(sink, frame)
    except (ConnectionClosed, TimeoutError):
        await sink.close()


def _forward_and_record(log: dict[str, list[Frame]]) -> Attack:
    async def attack(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        await asyncio.gather(
            _pump(target, controller, log.setdefault("from_target", [])),
            _pump(controller, target, log.setdefault("from_controller", [])),
        )

    return attack


async def test_an_honest_relay_of_ours_pairs() -> None:
    """The same harness with a relay that only forwards: the baseline the attacks break."""
    log: dict[str, list[Frame]] = {}
    async with hostile_relay(_forward_and_record(log), protocol=None) as url:
        target, controller = await _pair(url)
    assert isinstance(target, PairingResult) and isinstance(controller, PairingResult)
    assert [json.loads(f["payload"])["kind"] for f in log["from_target"]] == [
        "pake",
        "identity",
        "finish",
    ]


async def test_reference_like_relay_that_only_forwards_data() -> None:
    async with forwarding_relay() as url:
        target, controller = await _pair(url)
    assert isinstance(target, PairingResult), target
    assert isinstance(controller, PairingResult), controller
    assert target.pairing == controller.pairing == 3


async def test_separate_exchanges_with_both_sides_fail_visibly() -> None:
    """The relay runs its own PAKE with each side, guessing the password: both operators
    see a failed pairing; the guess is right with probability 10^-8 <= 2^-20."""
    relay_results: dict[str, object] = {}
    attack = pake_impostor(relay_results)

    async with hostile_relay(attack, protocol=None) as url:
        target, controller = await _pair(url)
    _failed(target, "code_mismatch")
    _failed(controller, "code_mismatch")
    # The relay learnt no identity either: it cannot open what the honest sides sealed.
    assert relay_results == {"toward_target": "code_mismatch", "toward_controller": "code_mismatch"}
    assert 1 / 10**PASSWORD_DIGITS <= 2**-20


async def test_a_replayed_transcript_fails_even_with_the_same_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Record an honest pairing, then replay each side's frames to the other in a new
    session that (worst case) uses the very same code: fresh PAKE secrets make it useless."""
    same = PairingCode.generate()
    monkeypatch.setattr(PairingCode, "generate", classmethod(lambda cls: same))
    log: dict[str, list[Frame]] = {}
    async with hostile_relay(_forward_and_record(log), protocol=None) as url:
        first = await _pair(url)
    assert all(isinstance(outcome, PairingResult) for outcome in first)

    async def replay(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        for frame in log["from_controller"]:
            await send(target, frame)
        for frame in log["from_target"]:
            await send(controller, frame)
        await asyncio.gather(receive(target), receive(controller), return_exceptions=True)

    async with hostile_relay(replay, protocol=None) as url:
        target, controller = await _pair(url)
    _failed(target, "code_mismatch")
    _failed(controller, "code_mismatch")


async def test_reflected_roles_fail_on_both_sides() -> None:
    """Each side's own frames sent back to it, as if it were its own peer."""

    async def reflect(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        await asyncio.gather(
            send(target, await receive(target)), send(controller, await receive(controller))
        )
        await asyncio.gather(receive(target), receive(controller), return_exceptions=True)

    async with hostile_relay(reflect, protocol=None) as url:
        target, controller = await _pair(url)
    _failed(target, "role_mismatch")
    _failed(controller, "role_mismatch")


def _forged_box(frame: Frame) -> Frame:
    body = json.loads(frame["payload"])
    body["box"] = b64encode(bytes(len(body["box"]) * 3 // 4))
    return {"type": "data", "payload": json.dumps(body)}


def _unsealed(kind: str) -> Frame:
    """The relay's own message of ``kind``, in the clear (it has no key to seal it)."""
    key = PrivateKey.generate()
    body = {"v": 3, "kind": kind, "publicKey": key.public_key_b64, "accepted": True}
    return {"type": "data", "payload": json.dumps(body)}


@pytest.mark.parametrize("forgery", ["zeroed_box", "unsealed"])
@pytest.mark.parametrize("step", ["identity", "finish"])
async def test_every_forged_non_pake_message_is_refused(forgery: str, step: str) -> None:
    """PAKE messages pass untouched; the relay replaces the identities (or the finishes) with
    its own. It holds no key, so nothing it makes opens on either side."""

    async def forge(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        for kind in ("pake", "identity", "finish"):
            for source, sink in ((target, controller), (controller, target)):
                frame = await receive(source)
                if kind == step:
                    frame = _forged_box(frame) if forgery == "zeroed_box" else _unsealed(kind)
                await send(sink, frame)
            if kind == step:
                break
        await asyncio.gather(receive(target), receive(controller), return_exceptions=True)

    async with hostile_relay(forge, protocol=None) as url:
        target, controller = await _pair(url)
    codes = ("code_mismatch",) if step == "identity" else ("protocol_violation", "decrypt_failed")
    if forgery == "unsealed":
        codes = ("protocol_violation",)
    _failed(target, *codes)
    _failed(controller, *codes)


async def test_a_forged_acceptance_does_not_save_on_the_controller() -> None:
    """Issue 10 item 7 for v3: the target's operator declines and the relay claims it
    accepted. The claim cannot be sealed without the key, so the controller refuses it."""

    async def lie(target: ServerConnection, controller: ServerConnection, code: str) -> None:
        for _ in range(2):
            for source, sink in ((target, controller), (controller, target)):
                await send(sink, await receive(source))  # PAKE, then identities
        declined = await receive(target)
        await send(controller, _forged_box(declined))
        await asyncio.gather(receive(target), receive(controller), return_exceptions=True)

    async with hostile_relay(lie, protocol=None) as url:
        target, controller = await _pair(url, target_accepts=False)
    _failed(target, "operator_declined")
    _failed(controller, "decrypt_failed")
