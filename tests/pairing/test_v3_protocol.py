"""Pairing v3 in memory: the code format, the state machines and what each message must pass."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authmesh.core._b64 import b64decode, b64encode
from authmesh.core._keys import PrivateKey
from authmesh.pairing import MAX_FRIENDLY_NAME_CHARS, PairingCode, PairingError
from authmesh.pairing._code import PASSWORD_DIGITS, ROUTING_DIGITS
from authmesh.pairing._identity import friendly_name
from authmesh.pairing._v3 import PAKE_MESSAGE_BYTES, V3Controller, V3Target
from tests.pairing.frames import Frame, body, raises, with_body

NOW = 1_775_476_800.0
CODE = PairingCode("482913", "58312075")


def _sides(
    controller_code: PairingCode = CODE, target_code: PairingCode = CODE
) -> tuple[V3Controller, V3Target, PrivateKey, PrivateKey]:
    controller_key, target_key = PrivateKey.generate(), PrivateKey.generate()
    controller = V3Controller(controller_key, "laptop", controller_code, clock=lambda: NOW)
    target = V3Target(target_key, "server", target_code, clock=lambda: NOW)
    return controller, target, controller_key, target_key


def _identities(controller: V3Controller, target: V3Target) -> tuple[Frame, Frame]:
    """Run the PAKE; returns (controller's identity frame, target's identity frame)."""
    controller_pake, target_pake = controller.start(), target.start()
    [controller_identity] = controller.receive(target_pake)
    [target_identity] = target.receive(controller_pake)
    return controller_identity, target_identity


# ---------------------------------------------------------------- the code people type


def test_online_guess_probability_from_the_format() -> None:
    """A relay that runs its own exchange guesses the password once per attempt."""
    password_space = 10**PASSWORD_DIGITS
    probability = 1 / password_space
    assert probability <= 2**-20
    assert math.log2(password_space) >= 20
    assert len(str(PairingCode.generate())) <= 20  # one terminal line, one chat message


codes = st.builds(
    PairingCode,
    st.text(alphabet="0123456789", min_size=ROUTING_DIGITS, max_size=ROUTING_DIGITS),
    st.text(alphabet="0123456789", min_size=PASSWORD_DIGITS, max_size=PASSWORD_DIGITS),
)
separators = st.text(alphabet=" -\t\u2013\u2014.", max_size=3)


@given(codes)
def test_print_then_parse_is_the_identity(code: PairingCode) -> None:
    printed = str(code)
    assert PairingCode.parse(printed) == code
    assert [len(group) for group in printed.split("-")] == [6, 4, 4]


@given(codes, st.lists(separators, min_size=15, max_size=15))
def test_separators_and_spaces_anywhere_are_tolerated(code: PairingCode, gaps: list[str]) -> None:
    digits = code.routing + code.password
    text = "".join(gap + char for gap, char in zip(gaps[:-1], digits, strict=True)) + gaps[-1]
    assert PairingCode.parse(text) == code


@given(st.text(max_size=30))
def test_anything_else_is_one_clear_error(text: str) -> None:
    try:
        PairingCode.parse(text)
    except PairingError as error:
        assert error.code in {"short_code", "invalid_v3_code"}


@pytest.mark.parametrize("text", ["482913", "482 913", "٤٨٢٩١٣-5831-2075", "482913-5831-207"])
def test_short_and_foreign_codes_are_named(text: str) -> None:
    expected = "short_code" if text.replace(" ", "") == "482913" else "invalid_v3_code"
    raises(expected, PairingCode.parse, text)


# ---------------------------------------------------------------- the exchange


def test_happy_exchange() -> None:
    controller, target, controller_key, target_key = _sides()
    controller_identity, target_identity = _identities(controller, target)
    assert controller.receive(target_identity) == []
    assert target.receive(controller_identity) == []
    assert controller.peer is not None and target.peer is not None
    assert controller.peer.public_key == target_key.public_key
    assert target.peer.public_key == controller_key.public_key
    assert controller.transcript == target.transcript
    target_finish, controller_finish = target.accept(), controller.accept()
    controller.receive(target_finish)
    target.receive(controller_finish)
    assert controller.finished and target.finished


def test_a_finish_may_arrive_before_this_side_decided() -> None:
    controller, target, _, _ = _sides()
    controller_identity, target_identity = _identities(controller, target)
    controller.receive(target_identity)
    target.receive(controller_identity)
    target.receive(controller.accept())  # the controller accepted first
    assert not target.finished
    target.accept()
    assert target.finished


@pytest.mark.parametrize("side", ["routing", "password"])
def test_a_typo_fails_on_both_sides(side: str) -> None:
    """One wrong digit gives different keys: both sides' first sealed message fails."""
    typo = (
        PairingCode("482914", CODE.password)
        if side == "routing"
        else PairingCode(CODE.routing, "58312076")
    )
    controller, target, _, _ = _sides(controller_code=typo)
    controller_identity, target_identity = _identities(controller, target)
    raises("code_mismatch", controller.receive, target_identity)
    raises("code_mismatch", target.receive, controller_identity)
    assert controller.peer is None and target.peer is None


def test_declining_reaches_the_peer() -> None:
    controller, target, _, _ = _sides()
    controller_identity, target_identity = _identities(controller, target)
    controller.receive(target_identity)
    target.receive(controller_identity)
    controller.accept()
    raises("peer_declined", controller.receive, target.decline())
    assert not controller.finished


def test_steps_out_of_turn_are_refused_by_the_object() -> None:
    controller, target, _, _ = _sides()
    raises("protocol_violation", controller.receive, target.start())  # before our start
    controller, target, _, _ = _sides()
    raises("protocol_violation", controller.accept)  # nothing verified yet
    controller, target, _, _ = _sides()
    _identities(controller, target)
    raises("protocol_violation", controller.start)  # a second PAKE message
    controller, target, _, _ = _sides()
    controller_identity, _ = _identities(controller, target)
    # A finish before the identity, and an identity twice.
    target.receive(controller_identity)
    finish = target.accept()
    raises("protocol_violation", controller.receive, finish)
    controller, target, _, _ = _sides()
    controller_identity, _ = _identities(controller, target)
    target.receive(controller_identity)
    raises("protocol_violation", target.receive, controller_identity)


def test_a_failed_object_takes_nothing_more() -> None:
    controller, target, _, _ = _sides()
    controller_identity, _ = _identities(controller, target)
    raises("code_mismatch", target.receive, with_body(controller_identity, box="AAAA"))
    raises("protocol_violation", target.receive, controller_identity)


def test_reflected_and_swapped_pake_messages_are_refused() -> None:
    """SPAKE2's side byte: a controller never accepts a controller's message."""
    controller, target, _, _ = _sides()
    own = controller.start()
    raises("role_mismatch", controller.receive, own)
    other_controller, _, _, _ = _sides()
    controller, target, _, _ = _sides()
    controller.start()
    raises("role_mismatch", controller.receive, other_controller.start())
    # Side bytes rewritten: each side's own message relabelled as the other role's.
    controller, target, _, _ = _sides()
    controller_pake, target_pake = controller.start(), target.start()
    relabelled = b"B" + b64decode(body(controller_pake)["pake"])[1:]
    raises(
        "role_mismatch", controller.receive, with_body(controller_pake, pake=b64encode(relabelled))
    )
    relabelled = b"A" + b64decode(body(target_pake)["pake"])[1:]
    raises("role_mismatch", target.receive, with_body(target_pake, pake=b64encode(relabelled)))


def test_identity_fields_are_checked() -> None:
    """The sealed identity must name the peer's role, and its id must match its key."""
    controller, target, _, _ = _sides()
    _identities(controller, target)
    # Re-seal a controller identity claiming the target role, with the controller's keys.
    fields = {
        "protocol": 3,
        "versions": [3],
        "role": "target",
        "deviceId": "am_x",
        "publicKey": PrivateKey.generate().public_key_b64,
        "friendlyName": "x",
        "timestamp": "2026",
        "sig": "",
    }
    controller._sent = 0  # a controller that sends this identity instead of its own
    forged = controller._sealed("identity", fields)
    raises("role_mismatch", target.receive, forged)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("A" * 44, "peer_is_legacy"),  # the reference's first frame: a bare base64 key
        (json.dumps({"v": 2, "kind": "commit", "commitment": "x"}), "peer_is_v2"),
        (json.dumps({"v": 4, "kind": "pake"}), "peer_is_legacy"),
    ],
)
def test_other_versions_are_named(payload: str, expected: str) -> None:
    target = _sides()[1]
    target.start()
    raises(expected, target.receive, {"type": "data", "payload": payload})


@pytest.mark.parametrize(
    "change",
    [
        {"pake": b64encode(bytes(PAKE_MESSAGE_BYTES))},
        {"pake": b64encode(b"A" + bytes(PAKE_MESSAGE_BYTES))},
        {"pake": 7},
        {"versions": []},
        {"versions": [2]},
        {"kind": "identity"},
    ],
)
def test_malformed_pake_messages_are_refused(change: dict[str, Any]) -> None:
    controller, target, _, _ = _sides()
    target.start()
    with pytest.raises(PairingError):
        target.receive(with_body(controller.start(), **change))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
frames = st.one_of(
    st.fixed_dictionaries({"type": st.just("data"), "payload": st.text(max_size=80)}),
    st.fixed_dictionaries({"type": st.just("data"), "payload": json_values.map(json.dumps)}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)


@settings(max_examples=40, deadline=None)  # pure-Python SPAKE2: ~30 ms per exchange
@given(frames)
def test_garbage_at_every_step_is_a_pairing_error(frame: Frame) -> None:
    controller, target, _, _ = _sides()
    target.start()
    with contextlib.suppress(PairingError):
        target.receive(frame)
    controller, target, _, _ = _sides()
    _identities(controller, target)
    with contextlib.suppress(PairingError):
        target.receive(frame)
    controller, target, _, _ = _sides()
    controller_identity, _ = _identities(controller, target)
    target.receive(controller_identity)
    with contextlib.suppress(PairingError):
        target.receive(frame)


def test_a_peer_name_over_the_limit_is_named_as_such() -> None:
    """Issue 13: a long name used to end as "The peer sent an unexpected message"."""
    controller = V3Controller(PrivateKey.generate(), "laptop", CODE, clock=lambda: NOW)
    target = V3Target(
        PrivateKey.generate(), "n" * (MAX_FRIENDLY_NAME_CHARS + 1), CODE, clock=lambda: NOW
    )
    _, target_identity = _identities(controller, target)
    raises("peer_name_too_long", controller.receive, target_identity)


def test_a_peer_name_with_a_lone_surrogate_is_a_protocol_violation() -> None:
    """JSON can carry "\\ud800"; it used to end in an internal error while signing."""
    raises("protocol_violation", friendly_name, "\ud800")
    assert friendly_name("café") == "café"
