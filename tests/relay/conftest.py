"""Relay processes (``tests/support/relayproc.py``) for the relay tests; their WebSocket
clients are in ``tests/support/relay_clients.py``.

Every test talks to ``python -m authmesh.relay`` started as a subprocess on 127.0.0.1 with
``PORT=0``; readiness is the printed start-up line plus a successful ``GET /health``, both
with deadlines. Most scenarios share one relay and tell their traffic apart by client address
(``X-Forwarded-For``, one trusted hop); scenarios needing other settings get their own process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from tests.support.relay_clients import SHARED_ENV, Client, Reaper, open_client
from tests.support.relayproc import RelayProcess, start_relay


@pytest.fixture(scope="session")
def reaper() -> Iterator[Reaper]:
    collector = Reaper()
    yield collector
    collector.close()


@pytest.fixture(scope="session")
def shared_relay() -> Iterator[RelayProcess]:
    """One relay (trusting one proxy hop) shared by scenarios that run with default limits.

    Each scenario uses its own client address (``X-Forwarded-For``), so rate limits never
    leak between scenarios; :func:`wait_idle` checks that every scenario leaves nothing behind.
    """
    process = start_relay(SHARED_ENV)
    yield process
    assert process.alive()
    assert process.stop() == 0


@pytest.fixture
def relay_factory(reaper: Reaper) -> Iterator[Any]:
    """``relay_factory(env)`` starts a relay with extra environment; stopped after the test
    (SIGTERM at once, exit status checked with the pool's at the end of the session)."""
    started: list[RelayProcess] = []

    def factory(env: Mapping[str, str] | None = None) -> RelayProcess:
        started.append(start_relay(env))
        return started[-1]

    yield factory
    for process in started:
        if process.terminated:
            assert process.stop() == 0  # the test stopped it itself: already exiting
        else:
            reaper.release(process)


@pytest.fixture
async def dial(relay_factory: Any) -> AsyncIterator[Any]:
    """``await dial(relay, headers)`` opens a client that is closed after the test
    (before its relay is stopped, so shutdown never waits for a vanished peer)."""
    opened: list[Client] = []

    async def factory(relay: RelayProcess, headers: Mapping[str, str] | None = None) -> Client:
        client = await open_client(relay, headers)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        await client.close()
