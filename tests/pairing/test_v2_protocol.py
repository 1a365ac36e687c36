"""Pairing v2 state machines in memory: the checks each message passes."""

from __future__ import annotations

import pytest

from authmesh.core._b64 import b64encode
from authmesh.core._keys import PrivateKey
from authmesh.pairing import PeerIdentity
from authmesh.pairing._v2 import (
    MAX_CLOCK_SKEW_SECONDS,
    V2Controller,
    V2Target,
    identity_statement,
)
from tests.pairing.frames import body, raises, with_body

NOW = 1_775_476_800.0
CODE = "482916"


def _pair(
    controller_clock: float = NOW, same_key: bool = False
) -> tuple[V2Controller, V2Target, PrivateKey, PrivateKey]:
    controller_key = PrivateKey.generate()
    target_key = controller_key if same_key else PrivateKey.generate()
    controller = V2Controller(controller_key, "laptop", CODE, clock=lambda: controller_clock)
    target = V2Target(target_key, "server", CODE, clock=lambda: NOW)
    return controller, target, controller_key, target_key


def _exchange(controller: V2Controller, target: V2Target) -> tuple[PeerIdentity, PeerIdentity]:
    reveal, controller_identity = controller.on_target_key(
        target.on_commit(controller.commit_frame())
    )
    target.on_reveal(reveal)
    seen_by_target, target_identity = target.on_controller_identity(controller_identity)
    return seen_by_target, controller.on_target_identity(target_identity)


def test_happy_exchange_and_verdict() -> None:
    controller, target, controller_key, target_key = _pair()
    seen_by_target, seen_by_controller = _exchange(controller, target)
    assert seen_by_target.public_key == controller_key.public_key
    assert seen_by_controller.public_key == target_key.public_key
    assert controller.sas == target.sas and len(target.sas) == 6
    assert controller.on_confirm(target.confirm_frame(True)) is True
    target.on_receipt(controller.receipt_frame())


def test_rejection_is_reported() -> None:
    controller, target, _, _ = _pair()
    _exchange(controller, target)
    assert controller.on_confirm(target.confirm_frame(False)) is False


@pytest.mark.parametrize(
    "change",
    [
        {"ephemeralKey": PrivateKey.generate().public_key_b64},
        {"nonce": b64encode(bytes(32))},
    ],
)
def test_reveal_must_match_commitment(change: dict[str, str]) -> None:
    """W1: a relay cannot swap its ephemeral key after seeing the target's."""
    controller, target, _, _ = _pair()
    reveal, identity = controller.on_target_key(target.on_commit(controller.commit_frame()))
    raises("commitment_mismatch", target.on_reveal, with_body(reveal, **change))
    # The object is finished after a failure: not even the genuine frames are taken now.
    raises("protocol_violation", target.on_reveal, reveal)
    raises("protocol_violation", target.on_controller_identity, identity)


def test_reflected_messages_are_refused() -> None:
    """W4: each direction has its own key and counter, so a bounced message never opens."""
    controller, target, _, _ = _pair()
    key_frame = target.on_commit(controller.commit_frame())
    reveal, controller_identity = controller.on_target_key(key_frame)
    raises("decrypt_failed", controller.on_target_identity, controller_identity)
    # The target's own ephemeral key reflected as the controller's.
    raises(
        "own_key",
        target.on_reveal,
        with_body(reveal, ephemeralKey=body(key_frame)["ephemeralKey"]),
    )


def test_replayed_identity_is_refused() -> None:
    controller, target, _, _ = _pair()
    reveal, controller_identity = controller.on_target_key(
        target.on_commit(controller.commit_frame())
    )
    target.on_reveal(reveal)
    target.on_controller_identity(controller_identity)
    raises("protocol_violation", target.on_controller_identity, controller_identity)


def test_tampered_box_is_refused() -> None:
    controller, target, _, _ = _pair()
    reveal, controller_identity = controller.on_target_key(
        target.on_commit(controller.commit_frame())
    )
    target.on_reveal(reveal)
    box = body(controller_identity)["box"]
    tampered = box[:-4] + ("AAAA" if box[-4:] != "AAAA" else "BBBB")
    raises(
        "decrypt_failed",
        target.on_controller_identity,
        with_body(controller_identity, box=tampered),
    )


@pytest.mark.parametrize("skew", [MAX_CLOCK_SKEW_SECONDS + 1, -MAX_CLOCK_SKEW_SECONDS - 1])
def test_clock_skew_is_refused(skew: float) -> None:
    controller, target, _, _ = _pair(controller_clock=NOW + skew)
    reveal, controller_identity = controller.on_target_key(
        target.on_commit(controller.commit_frame())
    )
    target.on_reveal(reveal)
    raises("clock_skew", target.on_controller_identity, controller_identity)


def test_small_clock_skew_is_fine() -> None:
    controller, target, _, _ = _pair(controller_clock=NOW + MAX_CLOCK_SKEW_SECONDS - 1)
    _exchange(controller, target)


def test_pairing_with_own_key_is_refused() -> None:
    controller, target, _, _ = _pair(same_key=True)
    reveal, controller_identity = controller.on_target_key(
        target.on_commit(controller.commit_frame())
    )
    target.on_reveal(reveal)
    raises("own_key", target.on_controller_identity, controller_identity)


def test_out_of_order_messages_are_refused() -> None:
    controller, target, _, _ = _pair()
    commit = controller.commit_frame()
    raises("protocol_violation", target.on_reveal, commit)
    raises("protocol_violation", controller.on_target_key, commit)
    _, target, _, _ = _pair()
    raises("protocol_violation", target.on_commit, {"type": "data", "payload": "[]"})
    _, target, _, _ = _pair()
    raises("peer_disconnected", target.on_commit, {"type": "error", "code": "peer_disconnected"})


def test_each_object_refuses_steps_out_of_turn() -> None:
    """Issue 14: the order is the objects' own rule, not only the driver's."""
    controller, target, _, _ = _pair()
    raises("protocol_violation", controller.receipt_frame)
    raises("protocol_violation", target.confirm_frame, True)
    controller, target, _, _ = _pair()
    _exchange(controller, target)
    rejected = target.confirm_frame(False)
    raises("protocol_violation", target.confirm_frame, True)  # the verdict is sent once
    assert controller.on_confirm(rejected) is False
    raises("protocol_violation", controller.commit_frame)  # a second commitment


def test_identity_statement_is_delimited_and_role_bound() -> None:
    """W4: v1's selfSig lets a name/timestamp boundary shift; v2's statement does not, and
    a signature made as one role does not verify as the other."""
    transcript, key = bytes(32), PrivateKey.generate().public_key
    base = identity_statement("controller", transcript, key, "MacBook Pro — dev", "2026")
    assert base != identity_statement("controller", transcript, key, "MacBook Pro — de", "v2026")
    assert base != identity_statement("target", transcript, key, "MacBook Pro — dev", "2026")
    assert base != identity_statement(
        "controller", bytes(31) + b"\x01", key, "MacBook Pro — dev", "2026"
    )


def test_different_codes_give_unrelated_transcripts() -> None:
    """The session code and protocol number are in the transcript: a relay that splices two
    sessions, or lies about the protocol, gets different keys on each side."""
    controller = V2Controller(PrivateKey.generate(), "laptop", CODE, clock=lambda: NOW)
    target = V2Target(PrivateKey.generate(), "server", "111111", clock=lambda: NOW)
    reveal, identity = controller.on_target_key(target.on_commit(controller.commit_frame()))
    target.on_reveal(reveal)
    assert target.transcript != controller.transcript
    raises("decrypt_failed", target.on_controller_identity, identity)
