"""Bad handshake and session frames sent to a real protocol-2 shell agent through a relay.

Only ``data`` payloads and ``done`` cross the relay to the agent, so every input is one of
those, at each step of the shell handshake (spec shell §3):

* ephemeral key step — anyone who knows the agent's device id and public key can get here;
* identity envelope step — after a valid ephemeral key: garbage, envelopes under the wrong
  key, and envelopes under the right key holding malformed identities, strangers' identities
  and the granted controller's identity bound to other keys or times;
* session step — the granted controller completes the handshake and then sends frames that
  fail authentication (garbage, replays, skipped counters, undecodable frames).

Every attempt must end with the agent ending that session (``done``, an error or a close)
and the agent alive; the caller then checks that the granted controller still gets a shell.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from authmesh.core._b64 import b64decode, b64encode
from authmesh.core._keys import PrivateKey
from authmesh.core._selfsig import Signer
from authmesh.core._tunnel import seal_blob
from authmesh.core.shell._cipher import ShellCipher
from authmesh.core.shell._handshake import (
    ShellIdentity,
    create_identity,
    derive_temp_key,
    shared_secret,
)
from authmesh.core.shell._wire import data_message
from authmesh.shell._channel import connect as relay_connect
from authmesh.shell._handshake import run_controller_handshake
from authmesh.store import Context
from tests.hostile.tally import Tally

__all__ = ["AgentTarget", "envelope_inputs", "ephemeral_inputs", "run_agent_campaign"]

DEADLINE = 25.0  # the agent's pending-handshake deadline is 10 s; the machine is shared
_END_TYPES = ("done", "error")
_DONE = '{"type":"done"}'


@dataclass(frozen=True)
class AgentTarget:
    """What an attacker knows of the agent (not secret) and the granted controller."""

    relay_url: str
    device_id: str
    public_key: str
    controller: Context
    target_name: str


def _data(payload: object) -> str:
    return json.dumps({"type": "data", "payload": payload}, separators=(",", ":"))


def _point(prefix: bytes, fill: int, size: int) -> str:
    return b64encode(prefix + bytes([fill]) * size)


# Frames sent instead of the controller's ephemeral key.
_BAD_KEYS: list[str] = [
    '{"type":"data"}',
    _DONE,
    *(
        _data(value)
        for value in [
            None,
            True,
            0,
            1.5,
            [],
            {},
            [b64encode(bytes(33))],
            "",
            "!!!!",
            "A",
            "====",
            "\u0000",
            "A" * 43,  # 32 bytes: no SEC1 prefix
            _point(b"\x04", 0, 64),  # the point (0, 0): not on the curve
            _point(b"\x02", 0xFF, 32),  # x beyond the field prime
            _point(b"\x05", 1, 32),  # unknown SEC1 prefix
            _point(b"\x00", 0, 0),  # the point at infinity
            _point(b"\x03", 0, 32),
            b64encode(bytes(65)),
            "A" * 60_000,
        ]
    ),
]


def ephemeral_inputs() -> list[Callable[[bytes], list[str]]]:
    """Attempts at the first step: each maps the agent's ephemeral key to the frames sent."""
    attempts: list[Callable[[bytes], list[str]]] = [
        (lambda _agent, frame=frame: [frame]) for frame in _BAD_KEYS
    ]
    # The agent's own key reflected back, then an envelope nobody can open.
    attempts.append(lambda agent: [data_message(agent), data_message(os.urandom(80))])
    return attempts


def _identity_variants(good: ShellIdentity) -> list[bytes]:
    document = json.loads(good.to_json())
    variants: list[Any] = [None, [], "s", 1, {}]
    for name in document:
        rest = {k: v for k, v in document.items() if k != name}
        variants.append(rest)
        for value in [None, 1, [], {}, "", "x" * 5_000, "\u0000"]:
            variants.append({**rest, name: value})
    texts = [json.dumps(v).encode() for v in variants]
    return [*texts, b"", b"not json", b"\xff\xfe", b"[" * 10_000, b'{"a":' * 5_000]


def envelope_inputs(
    target: AgentTarget,
) -> list[Callable[[bytes, bytes, bytes], bytes]]:
    """Envelopes sent after a valid ephemeral key: each maps (temp key, agent ephemeral,
    own ephemeral) to the envelope bytes."""
    signer: Signer = target.controller.signer
    name = target.controller.identity.friendly_name
    stranger = PrivateKey.generate()
    now = datetime.now(UTC)

    attempts: list[Callable[[bytes, bytes, bytes], bytes]] = [
        lambda _t, _a, _o: b"",
        lambda _t, _a, _o: b"x",
        lambda _t, _a, _o: os.urandom(100),
        lambda _t, _a, _o: os.urandom(40_000),
        lambda _t, a, o: seal_blob(os.urandom(32), b"{}"),  # the wrong key
    ]
    # Malformed plaintexts under the right key; the template identity's signature is valid.
    template = create_identity(signer, name, now, own_ephemeral=bytes(33), peer_ephemeral=bytes(33))
    for plaintext in _identity_variants(template):
        attempts.append(lambda t, _a, _o, p=plaintext: seal_blob(t, p))

    def sealed(key: Signer, moment: datetime, swap: bool = False) -> Callable[..., bytes]:
        def build(temp: bytes, agent: bytes, own: bytes) -> bytes:
            first, second = (agent, own) if swap else (own, agent)
            made = create_identity(key, name, moment, own_ephemeral=first, peer_ephemeral=second)
            return seal_blob(temp, made.to_json().encode())

        return build

    attempts += [
        sealed(stranger, now),  # a valid identity nobody granted
        sealed(signer, now - timedelta(days=2)),  # the granted key, stale
        sealed(signer, now + timedelta(days=2)),  # the granted key, from the future
        sealed(signer, now, swap=True),  # the granted key over the ephemerals swapped
        lambda t, a, o: seal_blob(  # the granted key, signed for another handshake
            t,
            create_identity(signer, name, now, own_ephemeral=bytes(33), peer_ephemeral=bytes(33))
            .to_json()
            .encode(),
        ),
    ]
    return attempts


# Session frames from the granted controller after a completed handshake.
def _session_inputs() -> list[Callable[[ShellCipher], list[str]]]:
    def garbage(payload: object) -> Callable[[ShellCipher], list[str]]:
        return lambda _cipher: [_data(payload)]

    def sealed(*frames: bytes) -> Callable[[ShellCipher], list[str]]:
        return lambda cipher: [data_message(cipher.encrypt(frame)) for frame in frames]

    def replayed(cipher: ShellCipher) -> list[str]:
        first = data_message(cipher.encrypt(b"\x01\x00\x01a"))
        return [first, first]

    def skipped(cipher: ShellCipher) -> list[str]:
        cipher.encrypt(b"\x01\x00\x01a")  # spent, never sent
        return [data_message(cipher.encrypt(b"\x01\x00\x01b"))]

    def flipped(cipher: ShellCipher) -> list[str]:
        message = bytearray(cipher.encrypt(b"\x01\x00\x01a"))
        message[-1] ^= 1
        return [data_message(bytes(message))]

    return [
        garbage(None),
        garbage(7),
        garbage(""),
        garbage("!!!"),
        garbage(b64encode(os.urandom(10))),
        garbage(b64encode(os.urandom(300))),
        replayed,
        skipped,
        flipped,
        sealed(b""),  # no type byte
        sealed(b"\xff"),  # unknown types
        sealed(b"\x00" * 10),
        sealed(b"\x02\x01"),  # RESIZE too short
        sealed(b"\x06\xff\xfe"),  # COMMAND that is not UTF-8
    ]


async def _open(url: str) -> ClientConnection:
    return await connect(url, compression=None, ping_interval=None, open_timeout=DEADLINE)


async def _ended(ws: ClientConnection) -> bool:
    """Whether the agent ended the session (done, an error, or the socket closed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    try:
        while loop.time() < deadline:
            message = await asyncio.wait_for(ws.recv(), deadline - loop.time())
            if json.loads(message).get("type") in _END_TYPES:
                return True
    except ConnectionClosed:
        return True
    except TimeoutError:
        return False
    return False


async def _requested(target: AgentTarget, ws: ClientConnection) -> bytes | None:
    """Ask for a shell; the agent's ephemeral key, or None if none came."""
    request = {
        "type": "shell",
        "targetDeviceId": target.device_id,
        "targetPublicKey": target.public_key,
    }
    await ws.send(json.dumps(request))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - loop.time()))
        if message.get("type") == "data":
            return b64decode(message["payload"])
        if message.get("type") == "error":
            return None
    return None


async def _attempt(
    target: AgentTarget, frames_for: Callable[[bytes], list[str]], tally: Tally, stage: str
) -> None:
    ws = await _open(target.relay_url)
    try:
        agent_ephemeral = await _requested(target, ws)
        if agent_ephemeral is None:
            tally.fail(f"{stage}: the agent never started a handshake")
            return
        frames = frames_for(agent_ephemeral)
        tally.tried(f"agent-{stage}", "\n".join(frames[-1:]).encode())
        for frame in frames:
            await ws.send(frame)
        if frames[-1] == _DONE:
            return  # the controller itself ended it: the relay answers nobody
        if not await _ended(ws):
            tally.fail(f"{stage}: the agent did not end the session for {frames[-1][:200]!r}")
    finally:
        await ws.close()


def _envelope_frames(
    build: Callable[[bytes, bytes, bytes], bytes],
) -> Callable[[bytes], list[str]]:
    def frames(agent_ephemeral: bytes) -> list[str]:
        own = PrivateKey.generate()
        temp = derive_temp_key(shared_secret(own, agent_ephemeral))
        return [
            data_message(own.public_key),
            data_message(build(temp, agent_ephemeral, own.public_key)),
        ]

    return frames


async def _session_attempt(
    target: AgentTarget, frames_for: Callable[[ShellCipher], list[str]], tally: Tally
) -> None:
    controller = target.controller
    entry = controller.allow_list.find_by_public_key(target.public_key)
    assert entry is not None, "the controller must know the agent"
    socket = await relay_connect(target.relay_url)
    frames: list[str] = []
    try:
        await socket.send(
            {
                "type": "shell",
                "targetDeviceId": target.device_id,
                "targetPublicKey": target.public_key,
            }
        )
        await socket.receive(DEADLINE)  # the relay's uniform peer_found
        established = await run_controller_handshake(
            socket,
            signer=controller.signer,
            friendly_name=controller.identity.friendly_name,
            target=entry,
            allow_list=lambda: controller.allow_list,
            term=None,
            timeout=DEADLINE,
        )
        frames = frames_for(established.cipher)
        tally.tried("agent-session", "\n".join(frames).encode())
        for frame in frames:
            await socket.send_text(frame)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while loop.time() < deadline:
            message = await socket.receive(deadline - loop.time())
            if message.get("type") in _END_TYPES:
                return
        tally.fail(f"session: the agent did not end the session for {frames[-1][:200]!r}")
    except Exception as exc:  # a closed socket is the agent ending it
        if type(exc).__name__ not in ("RelayClosed", "SessionEnded"):
            tally.fail(f"session: {exc!r} after {[f[:100] for f in frames]}")
    finally:
        await socket.close()


async def _bounded(jobs: list[Any], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Any) -> None:
        async with gate:
            await job

    await asyncio.gather(*(run(job) for job in jobs))


async def run_agent_campaign(
    target: AgentTarget, rounds: int = 1, concurrency: int = 3, tally: Tally | None = None
) -> Tally:
    """Every input ``rounds`` times (fresh random keys each time)."""
    tally = tally or Tally()
    jobs: list[Any] = []
    for _ in range(rounds):
        jobs += [_attempt(target, f, tally, "ephemeral") for f in ephemeral_inputs()]
        jobs += [
            _attempt(target, _envelope_frames(b), tally, "envelope")
            for b in envelope_inputs(target)
        ]
        jobs += [_session_attempt(target, f, tally) for f in _session_inputs()]
    await _bounded(jobs, concurrency)
    return tally
