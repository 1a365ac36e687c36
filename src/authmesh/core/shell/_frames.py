"""Shell session frames: ``type(1) || payload``, byte-exact with the reference (spec shell §5.1).

A frame is the plaintext of one :class:`~authmesh.core.shell.ShellCipher` message.
Integers are big-endian; RESIZE carries ``cols: u16 || rows: u16``, EXIT a signed 32-bit
code, COMMAND UTF-8 text, PING and PONG nothing.

Decoding follows the reference: only the type byte is checked up front, trailing bytes after
a RESIZE or EXIT payload are ignored and PING/PONG payloads are ignored; a short RESIZE or
EXIT payload fails when its value is read. Where the reference is sloppy we are strict, without
changing what a conforming peer sends:

* the encoder rejects RESIZE values outside ``0..65535`` and EXIT codes outside the i32 range
  (the reference silently truncates, ``frames.encode_truncation_note``);
* the encoder refuses frames that would not fit one 65,536-byte relay message (spec §5.2, W6)
  and :func:`data_frames` splits output into 16 KiB DATA frames;
* the decoder bounds the frame length and reads COMMAND text as strict UTF-8.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "DATA_CHUNK_SIZE",
    "MAX_DATA_PAYLOAD",
    "MAX_FRAME_LENGTH",
    "MAX_RECEIVED_FRAME_LENGTH",
    "Frame",
    "FrameError",
    "FrameType",
    "TerminalSize",
    "data_frames",
    "decode_frame",
    "encode_command",
    "encode_data",
    "encode_exit",
    "encode_frame",
    "encode_ping",
    "encode_pong",
    "encode_resize",
]

# The reference relay closes a sender whose WebSocket message exceeds 65,536 bytes. The
# envelope {"type":"data","payload":""} takes 28 of them; 65,508 base64 characters carry
# 49,131 bytes, minus the 12-byte nonce and 16-byte tag leaves 49,103 bytes of frame.
MAX_FRAME_LENGTH = 49_103
MAX_DATA_PAYLOAD = MAX_FRAME_LENGTH - 1
# What we send per DATA frame (W6): small enough to keep terminals responsive.
DATA_CHUNK_SIZE = 16 * 1024
# What we accept: a peer talking through a relay with a larger message cap may send bigger
# frames; anything past this bound is refused rather than buffered.
MAX_RECEIVED_FRAME_LENGTH = 1024 * 1024

_U16_MAX = 0xFFFF
_I32_MIN = -(2**31)
_I32_MAX = 2**31 - 1


class FrameError(ValueError):
    """A frame cannot be encoded or decoded; the message says why."""


class FrameType(IntEnum):
    """The frame type byte."""

    DATA = 0x01
    RESIZE = 0x02
    EXIT = 0x03
    PING = 0x04
    PONG = 0x05
    COMMAND = 0x06


@dataclass(frozen=True, slots=True)
class TerminalSize:
    """Terminal dimensions carried by a RESIZE frame."""

    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: its type and the raw payload that followed the type byte."""

    type: FrameType
    payload: bytes

    def terminal_size(self) -> TerminalSize:
        """The RESIZE payload (trailing bytes ignored, as the reference does)."""
        self._require(FrameType.RESIZE)
        if len(self.payload) < 4:
            raise FrameError("RESIZE frame too short")
        cols, rows = struct.unpack_from(">HH", self.payload)
        return TerminalSize(cols, rows)

    def exit_code(self) -> int:
        """The EXIT payload as a signed 32-bit code (trailing bytes ignored)."""
        self._require(FrameType.EXIT)
        if len(self.payload) < 4:
            raise FrameError("EXIT frame too short")
        (code,) = struct.unpack_from(">i", self.payload)
        return int(code)

    def command(self) -> str:
        """The COMMAND text; unlike the reference, invalid UTF-8 is refused, not replaced."""
        self._require(FrameType.COMMAND)
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("COMMAND frame is not valid UTF-8") from exc

    def _require(self, expected: FrameType) -> None:
        if self.type is not expected:
            raise FrameError(f"{self.type.name} frame has no {expected.name} payload")


def encode_frame(frame_type: FrameType, payload: bytes = b"") -> bytes:
    """``type || payload``; refuses frames too large for one relay message."""
    if len(payload) > MAX_DATA_PAYLOAD:
        raise FrameError(
            f"{frame_type.name} frame payload of {len(payload)} bytes exceeds the "
            f"{MAX_DATA_PAYLOAD}-byte limit of one relay message; split it"
        )
    return bytes([frame_type]) + payload


def encode_data(payload: bytes) -> bytes:
    """One DATA frame (empty payloads allowed)."""
    return encode_frame(FrameType.DATA, payload)


def data_frames(payload: bytes, chunk_size: int = DATA_CHUNK_SIZE) -> Iterator[bytes]:
    """DATA frames of at most ``chunk_size`` payload bytes each, covering ``payload``."""
    if not 0 < chunk_size <= MAX_DATA_PAYLOAD:
        raise FrameError(f"DATA chunk size must be between 1 and {MAX_DATA_PAYLOAD} bytes")
    for start in range(0, len(payload), chunk_size):
        yield encode_data(payload[start : start + chunk_size])


def encode_resize(cols: int, rows: int) -> bytes:
    """RESIZE ``cols x rows``; values must fit u16 (the reference truncates them)."""
    if not (0 <= cols <= _U16_MAX and 0 <= rows <= _U16_MAX):
        raise FrameError(f"terminal size {cols}x{rows} does not fit in 16-bit fields")
    return encode_frame(FrameType.RESIZE, struct.pack(">HH", cols, rows))


def encode_exit(code: int) -> bytes:
    """EXIT with a signed 32-bit status."""
    if not _I32_MIN <= code <= _I32_MAX:
        raise FrameError(f"exit code {code} does not fit in a signed 32-bit field")
    return encode_frame(FrameType.EXIT, struct.pack(">i", code))


def encode_ping() -> bytes:
    """PING (controller keepalive)."""
    return encode_frame(FrameType.PING)


def encode_pong() -> bytes:
    """PONG (answer to PING)."""
    return encode_frame(FrameType.PONG)


def encode_command(command: str) -> bytes:
    """COMMAND with UTF-8 text (the controller's ``-c``)."""
    return encode_frame(FrameType.COMMAND, command.encode("utf-8"))


def decode_frame(frame: bytes, *, max_length: int = MAX_RECEIVED_FRAME_LENGTH) -> Frame:
    """Split a frame into type and payload; the error texts are the reference's."""
    if not frame:
        raise FrameError("Empty frame")
    if len(frame) > max_length:
        raise FrameError(f"frame of {len(frame)} bytes exceeds the {max_length}-byte limit")
    try:
        frame_type = FrameType(frame[0])
    except ValueError:
        raise FrameError(f"Unknown frame type: 0x{frame[0]:x}") from None
    return Frame(frame_type, bytes(frame[1:]))
