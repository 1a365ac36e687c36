"""ShellCipher beyond the vectors: both directions, failures that must not desynchronise, close."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authmesh.core.shell._cipher import (
    MIN_MESSAGE_LENGTH,
    CipherErrorCode,
    Role,
    ShellCipher,
    ShellCipherError,
    message_nonce,
)


def _pair() -> tuple[ShellCipher, ShellCipher]:
    key = secrets.token_bytes(32)
    return ShellCipher(key, Role.CONTROLLER), ShellCipher(key, Role.TARGET)


def _code(call: Callable[..., object], *args: object) -> CipherErrorCode:
    with pytest.raises(ShellCipherError) as caught:
        call(*args)
    return caught.value.code


@settings(max_examples=25)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=64)), max_size=20))
def test_interleaved_conversation(messages: list[tuple[bool, bytes]]) -> None:
    controller, target = _pair()
    for from_controller, frame in messages:
        sender, receiver = (controller, target) if from_controller else (target, controller)
        assert receiver.decrypt(sender.encrypt(frame)) == frame
    sent_by_controller = sum(1 for flag, _ in messages if flag)
    assert (controller.send_counter, target.recv_counter) == (sent_by_controller,) * 2
    assert (target.send_counter, controller.recv_counter) == (
        len(messages) - sent_by_controller,
    ) * 2


def test_nonce_layout() -> None:
    assert message_nonce(Role.CONTROLLER, 1).hex() == "000000000000000000000001"
    assert message_nonce(Role.TARGET, 2**64 - 2).hex() == "80000000fffffffffffffffe"
    assert _code(message_nonce, Role.TARGET, -1) is CipherErrorCode.EXHAUSTED


def test_own_frames_reflected_back_are_rejected() -> None:
    controller, _ = _pair()
    message = controller.encrypt(b"\x01hello")
    assert _code(controller.decrypt, message) is CipherErrorCode.NONCE_MISMATCH
    assert controller.recv_counter == 0


def test_forgery_does_not_desynchronise() -> None:
    controller, target = _pair()
    genuine = controller.encrypt(b"\x01ls\r")
    forged = genuine[: MIN_MESSAGE_LENGTH - 1] + bytes([genuine[MIN_MESSAGE_LENGTH - 1] ^ 1])
    forged += genuine[MIN_MESSAGE_LENGTH:]
    assert _code(target.decrypt, forged) is CipherErrorCode.AUTHENTICATION_FAILED
    assert _code(target.decrypt, genuine[: MIN_MESSAGE_LENGTH - 1]) is CipherErrorCode.TOO_SHORT
    assert target.recv_counter == 0
    assert target.decrypt(genuine) == b"\x01ls\r"


def test_wrong_key_fails_authentication() -> None:
    controller, _ = _pair()
    stranger = ShellCipher(secrets.token_bytes(32), Role.TARGET)
    assert (
        _code(stranger.decrypt, controller.encrypt(b"\x04"))
        is CipherErrorCode.AUTHENTICATION_FAILED
    )


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_key_must_be_32_bytes(length: int) -> None:
    with pytest.raises(ShellCipherError) as caught:
        ShellCipher(bytes(length), Role.CONTROLLER)
    assert caught.value.code is CipherErrorCode.BAD_KEY


def test_closed_cipher_refuses_everything() -> None:
    controller, target = _pair()
    message = controller.encrypt(b"\x04")
    target.close()
    assert target.closed
    assert _code(target.decrypt, message) is CipherErrorCode.CLOSED
    assert _code(target.encrypt, b"\x05") is CipherErrorCode.CLOSED
    assert str(ShellCipherError(CipherErrorCode.CLOSED)) == "Cipher is closed"
