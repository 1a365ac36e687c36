"""Raw WebSocket frames that break RFC 6455 framing, sent over a hand-made upgrade.

A WebSocket client library refuses to send these, so the bytes are written to the socket
directly. Each case names the close codes RFC 6455 allows as the answer (§7.4.1: 1002
protocol error, 1007 invalid data, 1009 too big) or the text frames expected back when the
frames are valid but unusual (fragmented messages, pings with a payload).
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from dataclasses import dataclass

__all__ = ["RAW_CASES", "RawCase", "frame", "run_raw_case"]

DEADLINE = 10.0
_PROTOCOL_ERROR = frozenset({1002})


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame; ``length`` overrides the declared payload length."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if declared < 126:
        head += bytes([mask_bit | declared])
    elif declared < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", declared)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@dataclass(frozen=True)
class RawCase:
    name: str
    data: bytes
    closes: frozenset[int] = _PROTOCOL_ERROR
    """Close codes allowed; empty when the connection must stay open."""
    answers: tuple[bytes, ...] = ()
    """Payloads of the frames expected back before anything else (text or pong)."""


_PING = b'{"type":"ping"}'
_PONG = b'{"type":"pong"}'
TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9

RAW_CASES: list[RawCase] = [
    RawCase("rsv1 without an extension", frame(TEXT, _PING, rsv=4)),
    RawCase("rsv2 and rsv3", frame(TEXT, _PING, rsv=3)),
    RawCase("reserved data opcode 3", frame(0x3, _PING)),
    RawCase("reserved control opcode 11", frame(0xB, b"")),
    RawCase("unmasked client frame", frame(TEXT, _PING, masked=False)),
    RawCase("control frame of 126 bytes", frame(PING, b"x" * 126)),
    RawCase("fragmented control frame", frame(PING, b"x", fin=False)),
    RawCase("continuation without a start", frame(CONTINUATION, _PING)),
    RawCase(
        "new message inside a fragmented one",
        frame(TEXT, _PING[:5], fin=False) + frame(TEXT, _PING),
    ),
    RawCase("close with a 1-byte payload", frame(CLOSE, b"\x03")),
    RawCase("close code 999", frame(CLOSE, struct.pack("!H", 999))),
    RawCase("close code 1005", frame(CLOSE, struct.pack("!H", 1005))),
    RawCase("close code 1006", frame(CLOSE, struct.pack("!H", 1006))),
    RawCase("close code 5000", frame(CLOSE, struct.pack("!H", 5000))),
    RawCase(
        "close reason not UTF-8",
        frame(CLOSE, struct.pack("!H", 1000) + b"\xff\xfe"),
        closes=frozenset({1002, 1007}),
    ),
    RawCase(
        "64-bit length with its top bit set",
        frame(TEXT, b"", length=1 << 63),
        closes=frozenset({1002, 1009}),
    ),
    RawCase("declared length of 1 TiB", frame(TEXT, b"", length=1 << 40), closes=frozenset({1009})),
    RawCase(
        "fragments adding up past 65,536 bytes",
        frame(TEXT, b"[" * 40_000, fin=False) + frame(CONTINUATION, b"]" * 40_000),
        closes=frozenset({1009}),
    ),
    RawCase(
        "invalid UTF-8 split over fragments",
        frame(TEXT, b'{"type":"\xc3', fin=False) + frame(CONTINUATION, b'\x28"}'),
        closes=frozenset({1007}),
    ),
    RawCase(
        "a valid message in three fragments",
        frame(TEXT, _PING[:4], fin=False)
        + frame(CONTINUATION, _PING[4:9], fin=False)
        + frame(CONTINUATION, _PING[9:]),
        closes=frozenset(),
        answers=(_PONG,),
    ),
    RawCase(
        "a ping between fragments",
        frame(TEXT, _PING[:4], fin=False) + frame(PING, b"hi") + frame(CONTINUATION, _PING[4:]),
        closes=frozenset(),
        answers=(b"hi", _PONG),
    ),
    RawCase(
        "empty fragments",
        frame(TEXT, b"", fin=False)
        + frame(CONTINUATION, b"", fin=False)
        + frame(CONTINUATION, _PING),
        closes=frozenset(),
        answers=(_PONG,),
    ),
]


def _upgrade(port: int, address: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Forwarded-For: {address}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the relay closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"upgrade refused: {head[:60]!r}")
    return sock


def _server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the complete unmasked frames in ``data``."""
    frames = []
    while len(data) >= 2:
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + length:
            break
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


def run_raw_case(port: int, case: RawCase, address: str) -> str | None:
    """Send the case on a fresh connection; what broke the rules, or None."""
    with _upgrade(port, address) as sock:
        try:
            sock.sendall(case.data)
            if not case.closes:  # stays open: a ping proves the relay still reads it
                sock.sendall(frame(TEXT, _PING))
        except OSError:
            pass  # the relay closed before reading everything: judged below
        received = b""
        sock.settimeout(DEADLINE)
        try:
            while chunk := sock.recv(65_536):
                received += chunk
                got = _server_frames(received)
                if any(op == CLOSE for op, _ in got):
                    break
                if not case.closes and len(got) >= len(case.answers) + 1:
                    break
        except TimeoutError:
            return f"{case.name}: no answer within {DEADLINE} s"
        except OSError:
            pass
    got = _server_frames(received)
    closes = [struct.unpack("!H", p[:2])[0] for op, p in got if op == CLOSE and len(p) >= 2]
    if case.closes:
        if not closes:
            return f"{case.name}: dropped without a close frame ({got[:3]})"
        if closes[0] not in case.closes:
            return f"{case.name}: closed with {closes[0]}, expected one of {sorted(case.closes)}"
        return None
    payloads = tuple(p for op, p in got if op != CLOSE)
    if payloads[: len(case.answers)] != case.answers or closes:
        return f"{case.name}: answered {got[:4]}, expected {case.answers} and the pong"
    return None
