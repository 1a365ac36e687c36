"""Bad frames and HTTP requests against a real relay process, only through the network.

Attackers come from ever new addresses (the relay trusts one proxy hop, so
``X-Forwarded-For`` picks them), so the frames reach every handler past the rate limiters;
meanwhile legitimate pairs from other networks pair again and again. After each frame a
``ping`` round trip shows what the relay answered. Rules checked for every frame: only text
frames holding a JSON object of a known type come back; a frame that is not a JSON object
gets an error; only the documented close codes end a socket; the process stays up and
``/health`` answers 200 afterwards; no legitimate pairing fails meanwhile. Frames that break
WebSocket framing itself (``ws_frames.py``) must get the close code RFC 6455 names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.hostile.relay_corpus import Frame
from tests.hostile.tally import Tally
from tests.hostile.ws_frames import RAW_CASES, run_raw_case
from tests.support.relay_clients import open_client
from tests.support.relayproc import RelayProcess

__all__ = ["HTTP_PROBES", "RELAY_ENV", "run_relay_campaign"]

RELAY_ENV = {"AMESH_TRUST_PROXY": "1"}
DEADLINE = 10.0  # per answer; generous, the machine is shared
FRAMES_PER_SOCKET = 16

# Relay→client message types (spec §3.2 and the protocol-2 additions).
_KNOWN_TYPES = frozenset(
    {
        "ack",
        "peer_found",
        "data",
        "done",
        "error",
        "pong",
        "bootstrap_watching",
        "bootstrap_init",
        "bootstrap_ack",
        "bootstrap_reject",
        "agent_challenge",
        "agent_registered",
        "shell_request",
    }
)
# 1000: session over (with an error frame first); 1007: invalid UTF-8; 1009: too big.
_DOCUMENTED_CLOSES = frozenset({1000, 1007, 1009})
# Messages the relay may answer with silence (spec §3.1): data and done with nowhere to go
# (W13), bootstrap answers without a jti, a bootstrap_init forwarded to its watcher.
_SILENT_TYPES = frozenset({"data", "done", "bootstrap_init", "bootstrap_ack", "bootstrap_reject"})
_PING = '{"type":"ping"}'
_PONG = '{"type":"pong"}'

HTTP_PROBES: list[bytes] = [
    b"GET / HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: r\r\n\r\n",
    b"POST /ws HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /ws HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nX-Forwarded-For: not-an-ip, \xff\xfe\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nX-Forwarded-For: " + b"1.2.3.4, " * 500 + b"\r\n\r\n",
    b"GET /health?" + b"a=" * 2_000 + b" HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET /" + b"a" * 8_000 + b" HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nX-Big: " + b"b" * 16_000 + b"\r\n\r\n",
    b"HEAD /health HTTP/1.1\r\nHost: r\r\n\r\n",
    b"DELETE /health HTTP/1.1\r\nHost: r\r\n\r\n",
    b"BREW /health HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET /health HTTP/9.9\r\nHost: r\r\n\r\n",
    b"GET /health HTTP/1.0\r\n\r\n",
    b"GET /health\r\n\r\n",
    b"get /health http/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nContent-Length: -1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nContent-Length: \xb2\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GET\t/health HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32) + b"\r\n\r\n",  # a TLS hello
    b"\r\n\r\n",
    b"\x00" * 64 + b"\r\n\r\n",
    b"GET /ws%00 HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET /../health HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET http://evil/health HTTP/1.1\r\nHost: r\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: r\r\nHost: s\r\n\r\n",
    b"GET /health HTTP/1.1\r\n Host: r\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost r\r\n\r\n",
    b"GET /health HTTP/1.1\nHost: r\n\n",
]


def _parsed(frame: Frame) -> Any:
    """The frame's JSON value as the relay reads it (None when it is not JSON)."""
    text = frame[1].decode("utf-8", "replace")

    def constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(text, parse_constant=constant)
    except (ValueError, RecursionError):
        return None


def _kind(frame: Frame) -> object:
    value = _parsed(frame)
    return value.get("type") if isinstance(value, dict) else None


def _label(frame: Frame) -> str:
    text, data = frame
    more = "..." if len(data) > 400 else ""
    return f"{'text' if text else 'binary'} {data[:400]!r}{more}"


async def _open(relay: RelayProcess, address: str) -> ClientConnection:
    return (await open_client(relay, {"X-Forwarded-For": address})).ws


async def _answers(ws: ClientConnection, frame: Frame, tally: Tally) -> list[Any] | None:
    """Send ``frame`` and a ping; the frames answered before the pong. None if the relay
    closed the socket (its close code is checked here)."""
    pongs = 2 if _kind(frame) == "ping" else 1
    answers: list[Any] = []
    try:
        await ws.send(frame[1], text=frame[0])
        await ws.send(_PING)
        while pongs:
            message = await asyncio.wait_for(ws.recv(), DEADLINE)
            if not isinstance(message, str):
                tally.fail(f"{_label(frame)}: the relay sent a binary frame")
                continue
            if message == _PONG:
                pongs -= 1
                continue
            value = json.loads(message)
            if not isinstance(value, dict) or value.get("type") not in _KNOWN_TYPES:
                tally.fail(f"{_label(frame)}: unexpected frame {message[:120]!r}")
            answers.append(value)
    except ConnectionClosed:
        code = ws.close_code
        if code not in _DOCUMENTED_CLOSES:
            tally.fail(f"{_label(frame)}: closed with {code} {ws.close_reason!r}")
        return None
    except TimeoutError:
        tally.fail(f"{_label(frame)}: no answer within {DEADLINE} s")
        return None
    return answers


def _check_answers(frame: Frame, answers: list[Any], tally: Tally) -> None:
    value = _parsed(frame)
    kind = value.get("type") if isinstance(value, dict) else None
    errors = [a for a in answers if a.get("type") == "error"]
    if not isinstance(kind, str) and not errors:
        tally.fail(f"{_label(frame)}: no error for a frame without a string type ({answers})")
    elif not answers and kind not in _SILENT_TYPES and kind != "ping":  # its pong was counted
        tally.fail(f"{_label(frame)}: no answer at all")
    for error in errors:
        if not isinstance(error.get("code"), str):
            tally.fail(f"{_label(frame)}: error frame without a code: {error}")


async def _attacker(relay: RelayProcess, worker: int, frames: list[Frame], tally: Tally) -> None:
    sockets = 0
    ws: ClientConnection | None = None
    sent = 0
    for frame in frames:
        if ws is None or sent >= FRAMES_PER_SOCKET:
            if ws is not None:
                await ws.close()
            sockets += 1
            try:
                ws = await _open(relay, f"10.{worker}.{sockets % 256}.{sockets // 256 % 254 + 1}")
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                tally.fail(f"attacker {worker} cannot connect any more: {exc!r}")
                return
            sent = 0
        tally.tried("relay-ws", bytes([frame[0]]) + frame[1])
        answers = await _answers(ws, frame, tally)
        sent += 1
        if answers is None:
            ws = None
        else:
            _check_answers(frame, answers, tally)
    if ws is not None:
        await ws.close()


async def _legitimate_pair(relay: RelayProcess, round_: int) -> None:
    """A target and a controller from networks no attacker uses pair and exchange data."""
    # A /24 of its own each round: a fast relay runs thousands of rounds a minute, and the
    # relay's per-address and per-prefix listen budgets would rightly refuse reused ones.
    network = f"{150 + round_ // 65_536 % 20}.{round_ // 256 % 256}.{round_ % 256}"
    target = await _open(relay, f"{network}.10")
    controller = await _open(relay, f"{network}.20")
    code = f"{700_000 + round_:06d}"
    try:

        async def receive(ws: ClientConnection) -> Any:
            return json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))

        await target.send(json.dumps({"type": "listen", "otc": code}))
        assert await receive(target) == {"type": "ack", "message": "session_open"}
        await controller.send(json.dumps({"type": "connect", "otc": code}))
        assert await receive(controller) == {"type": "peer_found"}
        assert await receive(target) == {"type": "peer_found"}
        await target.send('{"type":"data","payload":"hello"}')
        assert await receive(controller) == {"type": "data", "payload": "hello"}
        await controller.send('{"type":"data","payload":"world"}')
        assert await receive(target) == {"type": "data", "payload": "world"}
    finally:
        await target.close()
        await controller.close()


async def _legitimate_traffic(relay: RelayProcess, done: asyncio.Event, tally: Tally) -> int:
    rounds = 0
    while not done.is_set() or rounds < 2:
        try:
            await _legitimate_pair(relay, rounds)
        except (AssertionError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
            tally.fail(f"legitimate pairing {rounds} failed during the campaign: {exc!r}")
        rounds += 1
    return rounds


def _http_probe(port: int, request: bytes, tally: Tally) -> None:
    tally.tried("relay-http", request)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        received = b""
        try:
            while b"\r\n" not in received and (chunk := sock.recv(4096)):
                received += chunk
        except OSError:
            pass  # reset by the relay: refused without an answer
    status = received.split(b" ", 2)[1:2]
    if status and status[0][:1] == b"5":
        tally.fail(f"HTTP {request[:60]!r}: answered {received.splitlines()[0]!r}")


def _raw_frames(port: int, tally: Tally) -> None:
    for number, case in enumerate(RAW_CASES):
        tally.tried("relay-raw", case.data)
        try:
            problem = run_raw_case(port, case, f"10.250.{number}.1")
        except (OSError, ConnectionError) as exc:
            problem = f"{case.name}: {exc!r}"
        if problem is not None:
            tally.fail(problem)


async def run_relay_campaign(
    relay: RelayProcess, frames: list[Frame], workers: int = 4, tally: Tally | None = None
) -> tuple[Tally, int]:
    """Send every frame once (spread over ``workers`` attackers), every HTTP probe and
    every frame that breaks WebSocket framing,
    while legitimate pairs keep pairing; (tally, legitimate pairings completed)."""
    tally = tally or Tally()
    done = asyncio.Event()
    legitimate = asyncio.create_task(_legitimate_traffic(relay, done, tally))
    try:
        await asyncio.gather(
            *(_attacker(relay, w, frames[w::workers], tally) for w in range(workers)),
            asyncio.to_thread(lambda: [_http_probe(relay.port, r, tally) for r in HTTP_PROBES]),
            asyncio.to_thread(_raw_frames, relay.port, tally),
        )
    finally:
        done.set()
        rounds = await legitimate
    if not relay.alive():
        tally.crashes += 1
        tally.fail(f"the relay died: {relay.stderr_text()[-2000:]}")
    elif relay.health() is None:
        tally.fail("/health does not answer 200 after the campaign")
    if "Traceback" in relay.stderr_text():
        tally.fail(f"the relay logged a traceback: {relay.stderr_text()[-2000:]}")
    return tally, rounds
