"""The shell handshake's steps on a fake clock: :mod:`authmesh.core.shell._handshake_machine`.

The two sides talk to each other directly (what one queues, the other receives), so each rule
— the order of the steps, the per-step deadline, who reveals what when, how a refusal or the
relay ends it — is checked without a relay or a wait. A property test feeds arbitrary orders
of handshake frames and relay messages and checks that only the protocol's order completes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET, AllowList, Device
from authmesh.core._keys import PrivateKey
from authmesh.core.shell._handshake import HandshakeErrorCode, ShellHandshakeError
from authmesh.core.shell._handshake_machine import (
    AuthorizePeer,
    ControllerHandshake,
    Ended,
    HandshakeStep,
    TargetHandshake,
    TargetMismatch,
)
from tests.shell.handshake_vectors import ALLOW_LIST_TIME, entry

TIMEOUT = 30.0
WALL = datetime(2026, 4, 5, 12, 0, tzinfo=UTC)
AGENT, CONTROLLER, STRANGER = PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate()


def _allow(*devices: Device) -> AllowList:
    allow_list = AllowList.empty(ALLOW_LIST_TIME)
    for device in devices:
        allow_list = allow_list.with_device(device, ALLOW_LIST_TIME)
    return allow_list


AGENT_ENTRY = entry(AGENT, "prod-box", ROLE_TARGET)
AGENT_ALLOWS = _allow(entry(CONTROLLER, "laptop", ROLE_CONTROLLER, shell=True))
CONTROLLER_ALLOWS = _allow(AGENT_ENTRY)


def _pair(
    now: float = 0.0, term: str | None = "xterm-256color"
) -> tuple[TargetHandshake, ControllerHandshake]:
    target = TargetHandshake(AGENT, "prod-box", now=now, timeout=TIMEOUT)
    controller = ControllerHandshake(
        CONTROLLER, AGENT_ENTRY, now=now, timeout=TIMEOUT, identity=("laptop", term)
    )
    return target, controller


def _messages(side: TargetHandshake | ControllerHandshake) -> list[dict[str, Any]]:
    return [json.loads(text) for text in side.messages_to_send()]


def _feed(
    side: TargetHandshake | ControllerHandshake, messages: list[dict[str, Any]], now: float = 1.0
) -> list[AuthorizePeer | Ended | None]:
    return [side.receive(message, now, WALL) for message in messages]


def test_both_sides_complete_with_the_same_key_and_the_term() -> None:
    target, controller = _pair()
    target.start()
    assert _feed(controller, _messages(target)) == [None]  # target's ephemeral key
    to_target = _messages(controller)
    assert len(to_target) == 2  # our ephemeral key, then our envelope
    steps = _feed(target, to_target)
    assert steps[0] is None and isinstance(steps[1], AuthorizePeer)
    assert steps[1].peer.device_id == CONTROLLER.device_id
    # Nothing of the target's identity is queued before it has authorized and admitted.
    assert target.messages_to_send() == []
    assert target.authorize(AGENT_ALLOWS).friendly_name == "laptop"  # our name for it
    assert target.messages_to_send() == []
    target_side = target.admit(True, WALL)
    (step,) = _feed(controller, _messages(target))
    assert isinstance(step, AuthorizePeer)
    controller_side = controller.authorize(CONTROLLER_ALLOWS)
    assert target_side.term == "xterm-256color" and controller_side.term is None
    assert controller_side.peer == AGENT_ENTRY
    frame = controller_side.cipher.encrypt(b"\x01hello")
    assert target_side.cipher.decrypt(frame) == b"\x01hello"
    assert target.step is HandshakeStep.DONE and controller.step is HandshakeStep.DONE


def test_a_target_at_capacity_reveals_nothing() -> None:
    target, controller = _pair()
    target.start()
    _feed(controller, _messages(target))
    _feed(target, _messages(controller))
    target.authorize(AGENT_ALLOWS)
    with pytest.raises(ShellHandshakeError) as refused:
        target.admit(False, WALL)
    assert refused.value.code is HandshakeErrorCode.AT_CAPACITY
    assert target.messages_to_send() == []
    assert target.step is HandshakeStep.FAILED


@pytest.mark.parametrize(
    ("allow_list", "code"),
    [
        (_allow(), HandshakeErrorCode.NOT_IN_ALLOW_LIST),
        (
            _allow(entry(CONTROLLER, "laptop", ROLE_CONTROLLER)),
            HandshakeErrorCode.SHELL_NOT_GRANTED,
        ),
        (_allow(entry(CONTROLLER, "laptop", ROLE_TARGET)), HandshakeErrorCode.NOT_A_CONTROLLER),
    ],
)
def test_the_target_refuses_an_unauthorized_controller(
    allow_list: AllowList, code: HandshakeErrorCode
) -> None:
    target, controller = _pair()
    target.start()
    _feed(controller, _messages(target))
    _feed(target, _messages(controller))
    with pytest.raises(ShellHandshakeError) as refused:
        target.authorize(allow_list)
    assert refused.value.code is code
    assert target.messages_to_send() == []
    with pytest.raises(ShellHandshakeError):  # no admission after a refusal
        target.admit(True, WALL)


def test_the_controller_pins_the_target_it_asked_for() -> None:
    impostor = TargetHandshake(STRANGER, "prod-box", now=0.0, timeout=TIMEOUT)
    _, controller = _pair()
    impostor.start()
    _feed(controller, _messages(impostor))
    _feed(impostor, _messages(controller))
    impostor.authorize(AGENT_ALLOWS)
    impostor.admit(True, WALL)
    with pytest.raises(TargetMismatch):
        _feed(controller, _messages(impostor))
    assert controller.step is HandshakeStep.FAILED


def test_each_step_has_its_own_deadline() -> None:
    target, controller = _pair(now=100.0)
    assert controller.next_deadline() == 100.0 + TIMEOUT
    controller.tick(100.0 + TIMEOUT - 0.001)  # not yet
    target.start()
    controller.receive(_messages(target)[0], 120.0, WALL)
    assert controller.next_deadline() == 120.0 + TIMEOUT  # the next step waits afresh
    controller.receive({"type": "pong"}, 140.0, WALL)  # not a step: no new deadline
    assert controller.next_deadline() == 120.0 + TIMEOUT
    with pytest.raises(TimeoutError):
        controller.tick(120.0 + TIMEOUT)
    assert controller.step is HandshakeStep.FAILED


def test_relay_messages_end_or_are_ignored() -> None:
    target, controller = _pair()
    assert controller.receive({"type": "pong"}, 1.0, WALL) is None
    assert controller.receive({"type": "whatever"}, 1.0, WALL) is None
    assert controller.receive({"type": "error", "code": "peer_disconnected"}, 1.0, WALL) == Ended(
        "peer_disconnected"
    )
    target.start()
    assert target.receive({"type": "done"}, 1.0, WALL) == Ended("done")
    fresh, _ = _pair()
    fresh.start()
    assert fresh.receive({"type": "data", "payload": 7}, 1.0, WALL) == Ended("invalid_payload")


def test_a_step_out_of_turn_is_refused_by_the_object() -> None:
    target, controller = _pair()
    with pytest.raises(ShellHandshakeError) as early:  # data before the target started
        target.receive({"type": "data", "payload": "AAAA"}, 1.0, WALL)
    assert early.value.code is HandshakeErrorCode.OUT_OF_ORDER
    with pytest.raises(ShellHandshakeError):  # no authorization before an identity
        controller.authorize(CONTROLLER_ALLOWS)
    other, _ = _pair()
    with pytest.raises(ShellHandshakeError):  # no admission before authorization
        other.admit(True, WALL)


def test_a_skewed_clock_is_refused() -> None:
    target, controller = _pair()
    target.start()
    _feed(controller, _messages(target))
    envelope = _messages(controller)
    target.receive(envelope[0], 1.0, WALL)
    with pytest.raises(ShellHandshakeError) as skewed:
        target.receive(envelope[1], 1.0, WALL + timedelta(seconds=61))
    assert skewed.value.code is HandshakeErrorCode.TIMESTAMP_OUT_OF_RANGE


# What the target may be handed: the controller's ephemeral key (0), its envelope (1), a pong
# (2) and the ephemeral key again (3, a replay).
_EPHEMERAL, _ENVELOPE, _PONG, _REPLAY = range(4)


def _expected(started: bool, order: list[int]) -> HandshakeStep | HandshakeErrorCode | None:
    """The step the target must stand at after ``order``, or the code it must refuse with
    (None: refused for a crypto reason, the envelope or key not fitting the step)."""
    data = [event for event in order if event != _PONG]
    if not started:
        return HandshakeErrorCode.OUT_OF_ORDER if data else HandshakeStep.START
    for position, event in enumerate(data):
        if position >= 2:
            return HandshakeErrorCode.OUT_OF_ORDER
        if (event == _ENVELOPE) != (position == 1):
            return None
    steps = [HandshakeStep.AWAIT_EPHEMERAL, HandshakeStep.AWAIT_ENVELOPE]
    return [*steps, HandshakeStep.AWAIT_AUTHORIZATION][len(data)]


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.lists(st.sampled_from(range(4)), max_size=6))
def test_only_the_protocol_order_reaches_authorization(started: bool, order: list[int]) -> None:
    """Any order of frames and relay chatter: the object stands where the protocol says, or
    refuses; it never queues more than its ephemeral key before authorization."""
    target, controller = _pair()
    peer = TargetHandshake(AGENT, "prod-box", now=0.0, timeout=TIMEOUT)
    if started:
        target.start()
        _feed(controller, _messages(target))
    else:  # the controller answered some other start; the target never started
        peer.start()
        _feed(controller, _messages(peer))
    ephemeral, envelope = _messages(controller)
    incoming = {_EPHEMERAL: ephemeral, _ENVELOPE: envelope, _PONG: {"type": "pong"}}
    incoming[_REPLAY] = ephemeral
    expected = _expected(started, order)
    results: list[AuthorizePeer | Ended | None] = []
    try:
        results = [target.receive(incoming[event], 1.0, WALL) for event in order]
    except ShellHandshakeError as refused:
        assert not isinstance(expected, HandshakeStep), (order, refused.code)
        if expected is not None:
            assert refused.code is expected
        assert target.step is HandshakeStep.FAILED
    else:
        assert target.step is expected
        assert isinstance(results[-1] if results else None, AuthorizePeer) == (
            expected is HandshakeStep.AWAIT_AUTHORIZATION and order[-1] == _ENVELOPE
        )
    assert target.messages_to_send() == []  # its ephemeral key was taken above, nothing else


def test_the_controller_refuses_a_third_handshake_frame_before_authorization() -> None:
    target, controller = _pair()
    target.start()
    (target_ephemeral,) = _messages(target)
    _feed(controller, [target_ephemeral])
    _feed(target, _messages(controller))
    target.authorize(AGENT_ALLOWS)
    target.admit(True, WALL)
    (envelope,) = _messages(target)
    assert isinstance(controller.receive(envelope, 1.0, WALL), AuthorizePeer)
    with pytest.raises(ShellHandshakeError) as late:  # the caller must authorize first
        controller.receive(target_ephemeral, 1.0, WALL)
    assert late.value.code is HandshakeErrorCode.OUT_OF_ORDER
    with pytest.raises(ShellHandshakeError):  # and a failed handshake stays failed
        controller.authorize(CONTROLLER_ALLOWS)
