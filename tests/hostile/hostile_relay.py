"""A relay that registers a shell agent and then sends it malformed frames.

Only a relay can send an agent ``shell_request``, ``agent_challenge`` or ``peer_found``, and
the relay is untrusted: the agent must shrug off anything it sends. Registration 1 gets
every malformed JSON object, then a good ``shell_request``; frames that are no JSON object
make the agent reconnect (by design), so each goes on a registration of its own; the last
registration gets a good ``shell_request`` again. The agent claims good requests on a new
socket (``agent_session``), which proves it still serves.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from tests.hostile.tally import Tally
from tests.support.shell import AgentProcess, make_home

__all__ = [
    "BREAKING_FRAMES",
    "OBJECT_FRAMES",
    "UNHASHABLE_CODES",
    "HostileRelay",
    "attack_agent",
]


def _message(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))


OBJECT_FRAMES: list[str] = [
    *(
        _message(type="shell_request", session=value)
        for value in [None, 1, 1.5, True, [], {}, ["tok"], "", "x" * 129, "t" * 60_000]
    ),
    _message(type="shell_request"),
    _message(type="agent_challenge", challenge="00000000-0000-4000-8000-000000000000"),
    _message(type="agent_challenge", challenge=None, protocol=2),
    _message(type="agent_registered"),
    _message(type="pong", extra="x" * 1_000),
    _message(type="data", payload="AAAA"),
    _message(type="data"),
    _message(type="done"),
    *(_message(type="error", code=c) for c in [None, 5, "x" * 1_000, "\u001b[2J", "\ud800"]),
    _message(type="error"),
    _message(type=None),
    _message(type=["shell_request"]),
    _message(),
    _message(type="SHELL_REQUEST", session="tok"),
    _message(type="x" * 10_000),
    # The legacy path: a session on the registration socket, then garbage for its handshake.
    _message(type="peer_found"),
    _message(type="data", payload=None),
    _message(type="peer_found"),
    _message(type="error", code="peer_disconnected"),
]
BREAKING_FRAMES: list[str | bytes] = ["not json", "null", "[]", '"shell_request"', b"\xff\xfe"]
# An error code the agent cannot hash: on main it escapes the agent's dispatch and ends it.
UNHASHABLE_CODES: list[str] = [_message(type="error", code=[]), _message(type="error", code={})]


class HostileRelay:
    """Serves on 127.0.0.1 in its own thread (the test blocks while it waits on the agent)."""

    def __init__(
        self,
        object_frames: list[str] = OBJECT_FRAMES,
        breaking_frames: list[str | bytes] = BREAKING_FRAMES,
    ) -> None:
        self.object_frames = object_frames
        self.breaking_frames = breaking_frames
        self.tokens = [f"good-{uuid.uuid4()}", f"good-{uuid.uuid4()}"]
        self.claimed: list[Any] = []
        self.registrations = 0
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def __enter__(self) -> HostileRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the hostile relay did not start")
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        stop = self._stop
        self._loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
        self._thread.join(10)

    def record(self, tally: Tally) -> None:
        for frame in [*self.object_frames, *self.breaking_frames]:
            tally.tried("agent-relay", frame.encode() if isinstance(frame, str) else frame)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0, max_size=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    async def _handle(self, ws: ServerConnection) -> None:
        first = json.loads(await ws.recv())
        if first.get("type") == "agent_session":
            self.claimed.append(first.get("session"))
            await ws.send(_message(type="error", code="no_pending_session"))
            return
        await ws.send(_message(type="agent_challenge", challenge=str(uuid.uuid4()), protocol=2))
        await ws.recv()  # the signature: an agent proves itself, whatever the relay does
        await ws.send(_message(type="agent_registered"))
        self.registrations += 1
        number = self.registrations
        if number == 1:
            for frame in self.object_frames:
                await ws.send(frame)
            await ws.send(_message(type="shell_request", session=self.tokens[0]))
        if 1 <= number <= len(self.breaking_frames):
            await ws.send(self.breaking_frames[number - 1])
        elif number == len(self.breaking_frames) + 1:
            await ws.send(_message(type="shell_request", session=self.tokens[1]))
        await ws.wait_closed()


def attack_agent(scratch: Path, relay: HostileRelay) -> str | None:
    """Run an agent on a fresh box against ``relay``; what went wrong, or None if it
    claimed both good requests around the frames, stayed up and logged no failure."""
    box, _, _ = make_home(scratch, "relay-victim")
    with relay:
        agent = AgentProcess(box, relay, scratch, "victim-agent")  # type: ignore[arg-type]  # only .url is read
        try:
            # Each frame that is no JSON object costs a reconnect (about a second of backoff).
            timeouts = [30.0, 15.0 + 3.0 * len(relay.breaking_frames)]
            for token, timeout in zip(relay.tokens, timeouts, strict=True):
                deadline = time.monotonic() + timeout
                while token not in relay.claimed and agent.process.poll() is None:
                    if time.monotonic() > deadline:
                        return "the agent stopped claiming good shell requests"
                    time.sleep(0.05)
                if agent.process.poll() is not None:
                    return f"the agent died: {agent.log()[-1500:]}"
        finally:
            agent.stop()
    log = agent.log()
    if "Traceback" in log or "failed unexpectedly" in log:
        return f"the agent logged a failure: {log[-1500:]}"
    return None
