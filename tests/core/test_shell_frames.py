"""Shell frames beyond the vectors: round trips, size limits and our stricter encoders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authmesh.core.shell._frames import (
    DATA_CHUNK_SIZE,
    MAX_DATA_PAYLOAD,
    MAX_FRAME_LENGTH,
    FrameError,
    FrameType,
    data_frames,
    decode_frame,
    encode_command,
    encode_data,
    encode_exit,
    encode_frame,
    encode_resize,
)
from authmesh.core.shell._wire import MAX_RELAY_MESSAGE, WireError, data_message


@given(st.binary(max_size=2048))
def test_data_round_trip(payload: bytes) -> None:
    frame = decode_frame(encode_data(payload))
    assert (frame.type, frame.payload) == (FrameType.DATA, payload)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_resize_round_trip(cols: int, rows: int) -> None:
    size = decode_frame(encode_resize(cols, rows)).terminal_size()
    assert (size.cols, size.rows) == (cols, rows)


@given(st.integers(-(2**31), 2**31 - 1))
def test_exit_round_trip(code: int) -> None:
    assert decode_frame(encode_exit(code)).exit_code() == code


@given(st.text(max_size=200))
def test_command_round_trip(command: str) -> None:
    try:
        frame = encode_command(command)
    except UnicodeEncodeError:
        return  # lone surrogates have no UTF-8 form
    assert decode_frame(frame).command() == command


@pytest.mark.parametrize(("cols", "rows"), [(-1, 24), (80, -1), (65536, 24), (80, 70000)])
def test_resize_out_of_range_is_refused(cols: int, rows: int) -> None:
    # The reference truncates to u16 (frames.encode_truncation_note); we refuse.
    with pytest.raises(FrameError, match="does not fit"):
        encode_resize(cols, rows)


@pytest.mark.parametrize("code", [2**31, -(2**31) - 1])
def test_exit_out_of_range_is_refused(code: int) -> None:
    with pytest.raises(FrameError, match="signed 32-bit"):
        encode_exit(code)


def test_largest_frame_fits_one_relay_message() -> None:
    # Spec shell §5.2: a 49,102-byte DATA payload is the most a 65,536-byte message carries.
    largest = encode_data(bytes(MAX_DATA_PAYLOAD))
    assert len(largest) == MAX_FRAME_LENGTH
    sealed_length = 12 + len(largest) + 16
    assert len(data_message(bytes(sealed_length))) == MAX_RELAY_MESSAGE
    with pytest.raises(WireError, match="exceeds the relay's 65536-byte limit"):
        data_message(bytes(sealed_length + 1))
    with pytest.raises(FrameError, match="split it"):
        encode_data(bytes(MAX_DATA_PAYLOAD + 1))


def test_data_frames_split_large_output() -> None:
    payload = bytes(range(256)) * 300  # 76,800 bytes
    frames = list(data_frames(payload))
    assert [len(frame) - 1 for frame in frames] == [DATA_CHUNK_SIZE] * 4 + [76_800 - 4 * 16_384]
    assert b"".join(decode_frame(frame).payload for frame in frames) == payload
    assert list(data_frames(b"")) == []
    with pytest.raises(FrameError):
        list(data_frames(payload, chunk_size=MAX_DATA_PAYLOAD + 1))


def test_decode_bounds_the_frame_length() -> None:
    with pytest.raises(FrameError, match="exceeds the 10-byte limit"):
        decode_frame(encode_data(bytes(10)), max_length=10)


def test_command_must_be_utf8() -> None:
    with pytest.raises(FrameError, match="not valid UTF-8"):
        decode_frame(b"\x06\xff\xfe").command()


def test_payload_accessors_check_the_frame_type() -> None:
    frame = decode_frame(encode_data(b"abcd"))
    for accessor in (frame.terminal_size, frame.exit_code, frame.command):
        with pytest.raises(FrameError, match="DATA frame has no"):
            accessor()


def test_encode_frame_keeps_type_byte() -> None:
    assert encode_frame(FrameType.PING) == b"\x04"
    assert encode_frame(FrameType.PONG, b"") == b"\x05"
