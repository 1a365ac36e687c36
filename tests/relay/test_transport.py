"""Abuse aimed at the relay's WebSocket transport itself (a real relay process).

Frames are written by hand (``RawSocket``) where a well-behaved client library would refuse
to send them: invalid UTF-8, stray continuations, oversized fragmented messages, a frame that
never finishes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import struct
import time
from typing import Any

import pytest

from tests.relay.test_abuse import LEGITIMATE, rss_kb, state_is_empty
from tests.support.relay_clients import open_client, pair, wait_for

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9
MAX_MESSAGE = 65_536


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame (the mask is zero: masking is mandatory, its value is not)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65_536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + b"\0\0\0\0" + payload


class RawSocket:
    """A WebSocket client that writes whatever bytes it is told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> tuple[int, bytes]:
        """The next frame from the relay: (opcode, payload)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(size), 5)

    async def request(self, data: bytes) -> Any:
        await self.send(data)
        opcode, payload = await self.receive()
        assert opcode == TEXT, (opcode, payload)
        return json.loads(payload)

    async def close_code(self) -> int:
        """Read until the relay's close frame; its code."""
        while True:
            opcode, payload = await self.receive()
            if opcode == CLOSE:
                return int(struct.unpack("!H", payload[:2])[0])

    def abort(self) -> None:
        self.writer.transport.abort()


PING_FRAME = frame(TEXT, b'{"type":"ping"}')


def error(code: str) -> dict[str, str]:
    return {"type": "error", "code": code}


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        (frame(TEXT, b"null"), error("unknown_type")),
        (frame(TEXT, b"[1,2,3]"), error("unknown_type")),
        (frame(TEXT, b"[" * 32_000 + b"]" * 32_000), error("invalid_message")),
        (frame(TEXT, b'{"a":' * 10_000 + b"1" + b"}" * 10_000), error("invalid_message")),
        (frame(BINARY, b"\xff\xfe\x00binary"), error("invalid_message")),
        (frame(TEXT, b'{"type":"ping","x":"\\ud800"}'), {"type": "pong"}),
    ],
    ids=["null", "array", "deep-array", "deep-object", "binary", "lone-surrogate"],
)
async def test_hostile_frames_get_an_answer_and_the_socket_stays(
    shared_relay: Any, payload: bytes, answer: dict[str, str]
) -> None:
    client = await RawSocket.open(shared_relay.port)
    try:
        assert await client.request(payload) == answer
        assert await client.request(PING_FRAME) == {"type": "pong"}
    finally:
        client.abort()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(TEXT, b'{"type":"ping","x":"\xff"}')], 1007),
        ([frame(TEXT, b"\xed\xa0\x80")], 1007),  # a UTF-8-encoded surrogate
        ([frame(TEXT, b"x" * (MAX_MESSAGE + 1))], 1009),
        ([frame(TEXT, b"x" * 40_000, fin=False), frame(CONTINUATION, b"x" * 40_000)], 1009),
        ([frame(CONTINUATION, b"stray")], 1002),
        ([frame(TEXT, b"[", fin=False), frame(TEXT, b"]")], 1002),
    ],
    ids=["invalid-utf8", "surrogate", "oversized", "oversized-fragments", "stray", "interleaved"],
)
async def test_frames_that_break_the_protocol_close_the_socket(
    shared_relay: Any, frames: list[bytes], code: int
) -> None:
    client = await RawSocket.open(shared_relay.port)
    try:
        await client.send(b"".join(frames))
        assert await client.close_code() == code
    finally:
        client.abort()
    await pair(shared_relay, "602214", source=LEGITIMATE)


async def test_fragmented_messages_are_assembled(shared_relay: Any) -> None:
    client = await RawSocket.open(shared_relay.port)
    try:
        pieces = [b'{"type":', b'"ping"', b"}"]
        data = frame(TEXT, pieces[0], fin=False) + frame(PING, b"p")
        data += frame(CONTINUATION, pieces[1], fin=False) + frame(CONTINUATION, pieces[2])
        await client.send(data)
        assert await client.receive() == (0xA, b"p")  # the ping in between is answered
        assert await client.receive() == (TEXT, b'{"type":"pong"}')
    finally:
        client.abort()


async def test_unfinished_upgrades_are_capped_per_address(relay_factory: Any) -> None:
    """Issue 10 item 3: the per-address cap used to apply only after the upgrade, so one
    address could hold any number of half-open upgrades until the handshake timeout."""
    relay = relay_factory({"AMESH_MAX_CONNECTIONS_PER_IP": "20", "AMESH_HANDSHAKE_TIMEOUT": "60"})
    loop = asyncio.get_running_loop()
    slow = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: relay\r\n")  # never finishes
            slow.append(sock)
        await pair(relay, "299792", source=LEGITIMATE)  # other addresses are served
        over = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        over.setblocking(False)
        try:
            answer = await asyncio.wait_for(loop.sock_recv(over, 1024), 5)
        finally:
            over.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
    finally:
        for sock in slow:
            sock.close()
    await wait_for(lambda: relay.metrics()['authmesh_relay_state_entries{map="connections"}'] == 0)
    await pair(relay, "299793")  # the address may open sockets again


async def test_a_frame_dribbled_byte_by_byte_does_not_keep_a_socket(relay_factory: Any) -> None:
    """Slowloris on frames: a frame that never completes is not a message, so the idle
    sweep closes the socket; the relay holds at most one unfinished frame for it."""
    relay = relay_factory({"AMESH_IDLE_TIMEOUT": "1", "AMESH_SWEEP_INTERVAL": "0.1"})
    client = await RawSocket.open(relay.port)
    started = time.monotonic()
    partial = frame(TEXT, b"x" * 60_000)

    async def dribble() -> None:
        for byte in range(len(partial) - 1):
            await client.send(partial[byte : byte + 1])
            await asyncio.sleep(0.05)

    dribbler = asyncio.create_task(dribble())
    try:
        assert await client.close_code() == 1000
        assert time.monotonic() - started < 5
    finally:
        dribbler.cancel()
        client.abort()


async def test_a_slow_reader_pauses_its_flooding_peer_without_loss(relay_factory: Any) -> None:
    """The peer of a reader that stopped is no longer read (TCP holds it back); the relay's
    memory stays bounded; when the reader resumes, every frame arrives in order."""
    relay = relay_factory({"AMESH_PAIRING_SESSION_BYTES": str(1 << 30), "AMESH_SEND_TIMEOUT": "60"})
    baseline = rss_kb(relay)
    target, controller = await open_client(relay), await open_client(relay)
    assert await target.request({"type": "listen", "otc": "662607"}) == {
        "type": "ack",
        "message": "session_open",
    }
    assert await controller.request({"type": "connect", "otc": "662607"}) == {"type": "peer_found"}
    assert await target.recv_json() == {"type": "peer_found"}
    target.ws.transport.pause_reading()
    body = "B" * 60_000
    sent = 0
    while sent < 2_000:  # 120 MB if nothing held the controller back
        try:
            payload = f"{sent:06d}{body}"
            await asyncio.wait_for(controller.send({"type": "data", "payload": payload}), 2)
        except TimeoutError:
            break
        sent += 1
    assert sent < 2_000, "the flooding peer was never held back"
    assert rss_kb(relay) - baseline < 16 * 1024
    assert relay.metrics()["authmesh_relay_sessions"] == 1  # paused, not dropped
    target.ws.transport.resume_reading()
    for n in range(sent):
        assert (await target.recv_json())["payload"][:6] == f"{n:06d}"
    await target.close()
    await controller.close()


IDLE_SOCKETS = 10_000


async def test_ten_thousand_idle_sockets(relay_factory: Any) -> None:
    """10,000 idle WebSockets from one address: all held, each costing a few KiB, while
    /health and a new pairing are served; all of it is gone once they close."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE_SOCKETS + 1024:
        pytest.skip(f"needs {IDLE_SOCKETS + 1024} open files, the limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    relay = relay_factory(
        {
            "AMESH_MAX_CONNECTIONS": str(IDLE_SOCKETS + 10),
            "AMESH_MAX_CONNECTIONS_PER_IP": str(IDLE_SOCKETS),
            "AMESH_IDLE_TIMEOUT": "600",
        }
    )
    await pair(relay, "141421")  # warm up
    baseline = rss_kb(relay)
    sockets: list[socket.socket] = []
    try:
        for start in range(0, IDLE_SOCKETS, 500):
            batch = [socket.socket() for _ in range(min(500, IDLE_SOCKETS - start))]
            for sock in batch:
                sock.connect(("127.0.0.1", relay.port))
                sock.sendall(UPGRADE)
            for sock in batch:
                sock.settimeout(10)
                assert sock.recv(1024).startswith(b"HTTP/1.1 101 ")
            sockets += batch
        metric = 'authmesh_relay_state_entries{map="connections"}'
        await wait_for(lambda: relay.metrics()[metric] == IDLE_SOCKETS, timeout=30)
        per_socket_kb = (rss_kb(relay) - baseline) / IDLE_SOCKETS
        assert per_socket_kb < 8, f"{per_socket_kb:.1f} KiB per idle socket"
        assert relay.health()["status"] == "ok"
        await pair(relay, "141422", source=LEGITIMATE)
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await wait_for(lambda: state_is_empty(relay), timeout=30)
    await pair(relay, "141423")


async def test_bytes_that_are_not_http_are_refused_at_once(relay_factory: Any) -> None:
    """A TLS handshake sent to the plain port gets a 400 now, not silence until the
    handshake timeout (the client then reports a TLS error instead of a timeout)."""
    relay = relay_factory({"AMESH_HANDSHAKE_TIMEOUT": "60"})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(bytes.fromhex("16030100c4010000c00303") + b"\0" * 32)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 400 ")
    finally:
        writer.close()
