"""Whatever a hostile relay or peer sends, each protocol step fails only with PairingError."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from authmesh.core._keys import PrivateKey
from authmesh.pairing import PairingError, check_token
from authmesh.pairing._v1 import V1Controller, V1Target
from authmesh.pairing._v2 import V2Controller, V2Target

NOW = 1_775_476_800.0
CODE = "123456"
CONTROLLER_KEY, TARGET_KEY = PrivateKey.generate(), PrivateKey.generate()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=10,
)
kinds = st.sampled_from(["commit", "key", "reveal", "identity", "confirm", "receipt", "x"])
bodies = st.fixed_dictionaries(
    {"v": st.sampled_from([2, 2.0, "2", 1]), "kind": kinds},
    optional={
        "commitment": st.text(max_size=50),
        "ephemeralKey": st.text(max_size=50),
        "nonce": st.text(max_size=50),
        "box": st.text(max_size=120),
    },
)
payloads = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    bodies.map(json.dumps),
)
frames = st.one_of(
    st.fixed_dictionaries({"type": st.just("data"), "payload": payloads}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)


def _fresh() -> tuple[V2Controller, V2Target]:
    controller = V2Controller(CONTROLLER_KEY, "laptop", CODE, clock=lambda: NOW)
    target = V2Target(TARGET_KEY, "server", CODE, clock=lambda: NOW)
    return controller, target


def _mutate(frame: dict[str, Any], position: int, replacement: str) -> dict[str, Any]:
    payload = frame["payload"]
    index = position % len(payload)
    return {"type": "data", "payload": payload[:index] + replacement + payload[index + 1 :]}


def _steps_in_turn() -> list[Callable[[dict[str, Any]], object]]:
    """Each receiving step of both objects, on a fresh pair advanced to just before it."""
    steps: list[Callable[[dict[str, Any]], object]] = []
    controller, target = _fresh()
    steps.append(target.on_commit)
    controller.commit_frame()
    steps.append(controller.on_target_key)
    controller, target = _fresh()
    reveal, identity = controller.on_target_key(target.on_commit(controller.commit_frame()))
    steps.append(target.on_reveal)
    controller, target = _fresh()
    reveal, identity = controller.on_target_key(target.on_commit(controller.commit_frame()))
    target.on_reveal(reveal)
    steps.append(target.on_controller_identity)
    _, target_identity = target.on_controller_identity(identity)
    steps.append(controller.on_target_identity)
    controller, target = _fresh()
    reveal, identity = controller.on_target_key(target.on_commit(controller.commit_frame()))
    target.on_reveal(reveal)
    _, target_identity = target.on_controller_identity(identity)
    controller.on_target_identity(target_identity)
    steps.append(controller.on_confirm)
    controller.on_confirm(target.confirm_frame(True))
    steps.append(target.on_receipt)
    return steps


@settings(max_examples=150, deadline=None)
@given(frames)
def test_garbage_at_every_step_is_a_pairing_error(frame: dict[str, Any]) -> None:
    for step in _steps_in_turn():
        with contextlib.suppress(PairingError):
            step(frame)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0), st.sampled_from('A/+=0{}":,x'))
def test_any_changed_character_in_a_sealed_identity_is_refused(position: int, char: str) -> None:
    controller, target = _fresh()
    reveal, identity = controller.on_target_key(target.on_commit(controller.commit_frame()))
    target.on_reveal(reveal)
    mutated = _mutate(identity, position, char)
    if mutated == identity:
        return
    try:
        target.on_controller_identity(mutated)
    except PairingError:
        return
    # Only an edit that leaves the JSON meaning intact (e.g. whitespace) may pass.
    assert json.loads(mutated["payload"]) == json.loads(identity["payload"])


@settings(max_examples=150, deadline=None)
@given(frames)
def test_garbage_at_every_v1_step_is_a_pairing_error(frame: dict[str, Any]) -> None:
    target = V1Target(TARGET_KEY, "server", clock=lambda: NOW)
    with contextlib.suppress(PairingError):
        target.on_controller_ephemeral(frame)
    controller = V1Controller(CONTROLLER_KEY, "laptop", clock=lambda: NOW)
    with contextlib.suppress(PairingError):
        controller.on_target_ephemeral(frame)
    # Past key agreement, the identity step.
    target = V1Target(TARGET_KEY, "server", clock=lambda: NOW)
    controller = V1Controller(CONTROLLER_KEY, "laptop", clock=lambda: NOW)
    ephemeral_frame, _ = controller.on_target_ephemeral(target.ephemeral_frame())
    target.on_controller_ephemeral(ephemeral_frame)
    with contextlib.suppress(PairingError):
        target.on_controller_identity(frame)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet="amesh-bt-v1.eyJ0AQw_-=", max_size=300))
def test_check_token_only_raises_pairing_error(token: str) -> None:
    with contextlib.suppress(PairingError):
        check_token(token, now=NOW)
