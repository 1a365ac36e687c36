"""Relay cluster fixtures (the clusters themselves are in ``tests/support/cluster.py``).

Fixtures: ``cluster`` (module: 3 instances behind nginx, for tests that leave it as they found
it), ``cluster_factory`` (per test: clusters the test may kill, restart or starve of Redis),
``private_redis`` (a redis-server the test may stop) and ``connect`` (clients closed after the
test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import (
    Cluster,
    ClusterFactory,
    Connect,
    cluster_behind_nginx,
    running_cluster,
)
from tests.support.redisproc import RedisServer
from tests.support.relay_clients import Client, open_client


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three instances behind nginx, shared by a module's tests; each test must leave it idle
    and use its own codes, token ids and client addresses."""
    with cluster_behind_nginx(redis_server, tmp_path_factory.mktemp("nginx")) as running:
        yield running


@pytest.fixture
def cluster_factory(redis_server: RedisServer) -> Iterator[ClusterFactory]:
    """``cluster_factory(count, env, server)``: instances (no nginx) on the session's
    Redis or the given one, stopped after the test."""
    with ExitStack() as stack:

        def factory(
            count: int = 3,
            env: Mapping[str, str] | None = None,
            server: RedisServer | None = None,
        ) -> Cluster:
            return stack.enter_context(running_cluster(server or redis_server, count, env))

        yield factory


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may stop and start again."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(instance)``: a client of one instance (anything with a ``url``), closed
    after the test while the test's event loop still runs, so relays never wait for it."""
    opened: list[Client] = []

    async def factory(instance: Any) -> Client:
        opened.append(await open_client(instance))
        return opened[-1]

    yield factory
    for client in opened:
        await client.close()
