"""Abuse against a real relay process (small caps via env to stay fast). After each attack the
relay still pairs a legitimate pair and its state and memory are back near the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from authmesh.relay._server import _Front
from tests.support.relay_clients import Client, open_client, pair, wait_for
from tests.support.relayproc import RelayProcess

ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}
LEGITIMATE = "127.0.0.2"  # the legitimate pair connects from its own address
MEMORY_SLACK_KB = 40 * 1024  # allocator high-water marks may stay; leaks would grow past this


def rss_kb(relay: RelayProcess) -> int:
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def state_is_empty(relay: RelayProcess) -> bool:
    metrics = relay.metrics()
    maps = ("connections", "sessions", "agents", "watchers", "bootstrap_targets")
    return all(metrics[f'authmesh_relay_state_entries{{map="{name}"}}'] == 0 for name in maps)


async def recovered(relay: RelayProcess, baseline_kb: int) -> None:
    """The attack left nothing behind and a legitimate pair still works."""
    await wait_for(lambda: state_is_empty(relay), timeout=10)
    assert relay.alive()
    await pair(relay, "314159", source=LEGITIMATE)
    assert rss_kb(relay) - baseline_kb < MEMORY_SLACK_KB


async def gather_all(tasks: list[Awaitable[Any]], batch: int = 100) -> list[Any]:
    """Run coroutines in batches (the kernel accept queue is finite)."""
    results: list[Any] = []
    for start in range(0, len(tasks), batch):
        results.extend(await asyncio.gather(*tasks[start : start + batch]))
    return results


async def test_malformed_frame_flood(relay_factory: Any) -> None:
    relay = relay_factory({})
    baseline = rss_kb(relay)
    frames = [
        "not json",
        "null",
        "{" * 30_000,
        "[" * 30_000 + "]" * 30_000,
        '{"type":' + '"x' * 20_000 + '"}',
        '{"type":"listen","otc":' + "1" * 60_000 + "}",
        b"\xff\xfe" * 30_000,
        '{"type":"data","payload":"' + "\\ud800" * 10_000 + '"}',
    ]
    clients = [await open_client(relay) for _ in range(20)]
    for round_ in range(10):
        for client in clients:
            await client.send(frames[round_ % len(frames)])
    for client in clients:
        await client.replies()
    oversize = await open_client(relay)
    await oversize.send("x" * 65_537)
    assert (await oversize.closed())[0] == 1009
    for client in clients:
        await client.close()
    await recovered(relay, baseline)


async def test_thousand_sockets_flooding_bad_codes(relay_factory: Any) -> None:
    relay = relay_factory({"AMESH_MAX_CONNECTIONS_PER_IP": "2000"})
    baseline = rss_kb(relay)
    target = await open_client(relay)
    assert await target.request({"type": "listen", "otc": "271828"}) == ACK

    async def flood(n: int) -> list[Any]:
        client = await open_client(relay)
        try:
            replies = []
            for k in range(3):
                await client.send({"type": "connect", "otc": f"{(n * 7 + k) % 1_000_000:06d}"})
                replies.append((await client.recv_json())["code"])
            return replies
        finally:
            await client.close()

    results = await gather_all([flood(n) for n in range(1000)])
    codes = {code for replies in results for code in replies}
    assert codes <= {"otc_not_found", "rate_limited"}
    assert "rate_limited" in codes  # one address: its failure budget ran out quickly
    await target.sync()  # the waiting target was not disturbed
    await target.close()
    await recovered(relay, baseline)


async def test_bruteforce_live_code_from_spoofed_addresses(relay_factory: Any) -> None:
    """W6: each spoofed address is fresh (ten networks), yet the global budget stops the attack
    before it reaches the live code: once it is used up, networks that failed get no further
    guess. The waiting code is not burned (H1) and pairs afterwards."""
    relay = relay_factory({"AMESH_TRUST_PROXY": "1", "AMESH_GLOBAL_FAILURE_BUDGET": "100"})
    baseline = rss_kb(relay)
    live = 150
    target = await open_client(relay)
    assert await target.request({"type": "listen", "otc": f"{live:06d}"}) == ACK

    async def guess(code: int) -> Any:
        client = await open_client(
            relay, {"X-Forwarded-For": f"203.0.113.{code % 250}, 10.{code % 10}.0.{code // 10}"}
        )
        try:
            return await client.request({"type": "connect", "otc": f"{code:06d}"})
        finally:
            await client.close()

    replies = [await guess(code) for code in range(live + 1)]
    assert {"type": "peer_found"} not in replies
    assert replies[99] == {"type": "error", "code": "otc_not_found"}
    assert replies[live] == {"type": "error", "code": "rate_limited"}
    controller = await open_client(relay, {"X-Forwarded-For": "192.0.2.1"})
    assert await controller.request({"type": "connect", "otc": f"{live:06d}"}) == PEER_FOUND
    assert await target.recv_json() == PEER_FOUND
    await target.close()
    await controller.close()

    await recovered(relay, baseline)


async def test_listen_flood_to_the_session_cap(relay_factory: Any) -> None:
    relay = relay_factory({"AMESH_MAX_SESSIONS": "50", "AMESH_LISTEN_LIMIT": "1000"})
    baseline = rss_kb(relay)
    clients: list[Client] = [await open_client(relay) for _ in range(60)]
    replies = [
        await client.request({"type": "listen", "otc": f"{600000 + n}"})
        for n, client in enumerate(clients)
    ]
    assert replies.count(ACK) == 50
    assert replies[50:] == [{"type": "error", "code": "relay_capacity"}] * 10
    assert relay.health()["sessions"] == 50
    for client in clients:
        await client.close()
    await recovered(relay, baseline)


async def test_connection_flood_to_the_cap(relay_factory: Any) -> None:
    relay = relay_factory({"AMESH_MAX_CONNECTIONS": "40"})
    baseline = rss_kb(relay)
    clients = [await open_client(relay) for _ in range(50)]
    outcomes = []
    for client in clients:
        try:
            await client.sync()
            outcomes.append("open")
        except Exception:
            outcomes.append(await client.closed())
    assert outcomes.count("open") == 40
    assert outcomes[40:] == [(1013, "too_many_connections")] * 10
    # the cap holds while full, and frees up as soon as sockets leave
    extra = await open_client(relay)
    assert await extra.closed() == (1013, "too_many_connections")
    for client in clients:
        await client.close()
    await recovered(relay, baseline)


async def test_slow_clients_that_never_finish_the_upgrade(relay_factory: Any) -> None:
    relay = relay_factory({"AMESH_HANDSHAKE_TIMEOUT": "0.5"})
    baseline = rss_kb(relay)
    slow = []
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n")
        slow.append(sock)
    await pair(relay, "161803", source=LEGITIMATE)  # served while the slow clients hang
    loop = asyncio.get_running_loop()
    for sock in slow:
        sock.setblocking(False)
        assert await asyncio.wait_for(loop.sock_recv(sock, 1024), 5) == b""  # dropped
        sock.close()
    await recovered(relay, baseline)


async def test_a_peer_that_stops_reading_is_dropped(relay_factory: Any) -> None:
    """Backpressure holds the sender back; a peer that stays unread past AMESH_SEND_TIMEOUT
    is closed, its partner told, and nothing piles up meanwhile."""
    relay = relay_factory(
        {"AMESH_PAIRING_SESSION_BYTES": str(200 * 1024 * 1024), "AMESH_SEND_TIMEOUT": "1"}
    )
    baseline = rss_kb(relay)
    target, controller = await open_client(relay), await open_client(relay)
    assert await target.request({"type": "listen", "otc": "577215"}) == ACK
    await controller.send({"type": "connect", "otc": "577215"})
    assert await controller.recv_json() == {"type": "peer_found"}
    target.ws.transport.pause_reading()  # the target stops reading for good
    frame = '{"type":"data","payload":"' + "A" * 60_000 + '"}'
    for _ in range(1000):
        await controller.send(frame)
        if relay.metrics()["authmesh_relay_sessions"] == 0:
            break
    assert await controller.recv_json() == {"type": "error", "code": "peer_disconnected"}
    await controller.close()
    target.ws.transport.abort()
    await recovered(relay, baseline)


def _upgraded_socket(relay: RelayProcess) -> socket.socket:
    """A raw TCP socket through the WebSocket upgrade (frames are written by hand)."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    sock.sendall(_UPGRADE + b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def _masked_ping(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + body


async def test_a_ping_is_answered_with_its_payload(relay_factory: Any) -> None:
    """Pings are answered by the relay itself (not picows) so that it can refuse to queue a
    pong for a peer that reads nothing; an ordinary ping still gets its pong."""
    client = await open_client(relay_factory({}))
    pong = await client.ws.ping(b"are you there")
    await asyncio.wait_for(pong, 10)
    await client.close()


async def test_a_ping_flood_that_never_reads_its_pongs_is_not_buffered(
    relay_factory: Any,
) -> None:
    """Pongs go out without the relay's frame handler; a client that sends pings and reads
    nothing used to have every pong queued in the relay for the whole send timeout."""
    relay = relay_factory({"AMESH_SEND_TIMEOUT": "5"})
    baseline = rss_kb(relay)
    sock = _upgraded_socket(relay)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    burst = _masked_ping(b"p" * 125) * 4096  # 540 KiB of pings, 512 KiB of pongs
    sock.settimeout(2)  # the relay stops reading this socket: sendall then blocks
    with contextlib.suppress(TimeoutError):
        for _ in range(120):  # up to 64 MiB of pongs
            await asyncio.to_thread(sock.sendall, burst)
    assert rss_kb(relay) - baseline < 16 * 1024
    sock.close()
    await recovered(relay, baseline)


def test_a_large_head_in_one_read_is_refused_unparsed() -> None:
    """A head over the limit is refused even when it arrives whole in one read (it used to be
    parsed, its X-Forwarded-For split into as many entries as it held)."""
    calls: list[str] = []
    relay = SimpleNamespace(
        _answer=lambda front, status, body, kind: calls.append(f"{status} {body}"),
        _request=lambda front, head, rest: calls.append("parsed"),
    )
    front = _Front(cast(Any, relay))
    forwarded = b"X-Forwarded-For: " + b",".join([b"10.0.0.1"] * 20_000) + b"\r\n"
    front.data_received(_UPGRADE + forwarded + b"\r\n")
    assert calls == ["400 Request head too large"]
