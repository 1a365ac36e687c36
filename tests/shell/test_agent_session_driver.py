"""The agent's asyncio driver around the session core: what it must never do with a
misbehaving shell or a cancelled send (no PTY, relay or wait needed)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from types import SimpleNamespace
from typing import Any, cast

import pytest

from authmesh.core.shell._cipher import Role, ShellCipher
from authmesh.core.shell._frames import DATA_CHUNK_SIZE
from authmesh.core.shell._session import AgentSession
from authmesh.shell._agent_session import _DRAIN_LIMIT, ShellSession


def _driver(channel: object) -> tuple[ShellSession, AgentSession]:
    agent = SimpleNamespace(config=None, log=logging.getLogger("test.agent"))
    session = ShellSession(cast(Any, agent), cast(Any, channel), 1)
    core = AgentSession(ShellCipher(secrets.token_bytes(32), Role.TARGET), now=0.0, idle_timeout=0)
    core.tick(10.0)  # no first frame: the interactive shell starts
    session._core = core
    return session, core


class _EndlessOutput:
    """A terminal a background job (``yes &``) keeps writing to after the shell exited."""

    def read_available(self, size: int) -> bytes:
        return b"y\n" * (size // 2)


@pytest.mark.timeout(30)
async def test_drain_after_exit_is_bounded() -> None:
    session, core = _driver(channel=None)
    await session._drain(cast(Any, _EndlessOutput()))
    queued = len(list(iter(core.next_message, None)))
    assert 0 < queued <= _DRAIN_LIMIT // DATA_CHUNK_SIZE + 1


class _StalledChannel:
    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        self.sending.set()
        await asyncio.Event().wait()  # a relay that stopped reading


async def test_cancelled_flush_keeps_the_frames_not_yet_sent() -> None:
    channel = _StalledChannel()
    session, core = _driver(channel)
    core.output(b"a" * (3 * DATA_CHUNK_SIZE), 11.0)  # three frames, counters 0..2
    flush = asyncio.create_task(session._flush())
    await asyncio.wait_for(channel.sending.wait(), 10)
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    # The first frame is on its way (shielded); the other two stay queued, in order.
    assert len(channel.sent) == 1
    assert len(list(iter(core.next_message, None))) == 2
