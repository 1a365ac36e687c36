"""Relay clusters for the tests: real relay processes sharing one real redis-server.

A :class:`Cluster` is N relay processes (``AMESH_REDIS_URL`` set,
``AMESH_INSTANCE_TTL=1`` so a dead instance is noticed within about a second), optionally with
the repository's nginx site config in front (round robin, no affinity). Each cluster gets its
own Redis database, so rate-limit buckets and consumed token ids never leak between clusters;
instances find each other through pub/sub, which Redis does not split by database, but every
instance has its own channel.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import redis

from tests.support.nginxproc import running_nginx
from tests.support.redisproc import RedisServer
from tests.support.relay_clients import Client, http_request
from tests.support.relayproc import RelayProcess, read_metrics, relay_env

__all__ = [
    "CLUSTER_ENV",
    "Cluster",
    "ClusterFactory",
    "Connect",
    "cluster_behind_nginx",
    "fresh_database",
    "health_of",
    "metrics_of",
    "running_cluster",
]

# A dead instance is declared dead after 1 s. Every test client comes from 127.0.0.1, so the
# per-address connection cap (per instance) and the codes one address may open must not be
# what a test runs into.
CLUSTER_ENV = {
    "AMESH_INSTANCE_TTL": "1",
    "AMESH_MAX_CONNECTIONS_PER_IP": "100000",
    "AMESH_LISTEN_LIMIT": "100000",
}
# Behind nginx the relay trusts two hops: nginx (which appends its peer, 127.0.0.1) and the
# test client, which names a per-scenario client address in X-Forwarded-For the way an outer
# load balancer would. Without the second hop every scenario would share 127.0.0.1's
# rate-limit bucket, which lives in Redis for the whole cluster.
BEHIND_NGINX_ENV = {"AMESH_TRUST_PROXY": "2"}
_databases = itertools.count(1)  # database 0 is the SDK tests'


def fresh_database(redis_server: RedisServer) -> str:
    """The URL of an empty database of ``redis_server`` no other cluster uses."""
    url = redis_server.url(next(_databases))
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def metrics_of(port: int) -> dict[str, float]:
    """The unlabelled samples of one instance's ``/metrics``."""
    return {name: value for name, value in read_metrics(port).items() if "{" not in name}


def health_of(port: int) -> tuple[int, dict[str, Any]]:
    """(status, parsed body) of one instance's ``/health`` (503 when degraded)."""
    status, _, _, body = http_request(port, "GET", "/health")
    return status, json.loads(body)


class Cluster:
    """Relay instances on one Redis database; :attr:`port` is nginx's when there is one, so
    the transcript replay can treat the cluster as one relay (``port``, ``url``, ``alive``,
    ``health``, ``metrics``)."""

    def __init__(self, instances: list[RelayProcess]) -> None:
        self.instances = instances
        self.port = 0

    @property
    def url(self) -> str:
        """nginx's WebSocket URL (the cluster as one relay)."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def __getitem__(self, index: int) -> RelayProcess:
        return self.instances[index]

    def alive(self) -> bool:
        return all(instance.alive() for instance in self.instances)

    def health(self) -> dict[str, Any]:
        """``/health`` of the whole cluster: every instance answers 200, counts are summed."""
        total: dict[str, Any] = {"status": "ok", "sessions": 0, "agents": 0}
        for instance in self.instances:
            status, body = health_of(instance.port)
            assert status == 200, (instance.port, status, body)
            total["sessions"] += body["sessions"]
            total["agents"] += body["agents"]
        return total

    def metrics(self) -> dict[str, float]:
        """Every instance's unlabelled ``/metrics`` samples, summed."""
        total: dict[str, float] = {}
        for instance in self.instances:
            for name, value in metrics_of(instance.port).items():
                total[name] = total.get(name, 0.0) + value
        return total

    def idle(self) -> bool:
        """No connection, session, agent or watcher left on any instance."""
        metrics = self.metrics()
        return all(
            metrics[name] == 0
            for name in (
                "authmesh_relay_connections",
                "authmesh_relay_sessions",
                "authmesh_relay_agents",
                "authmesh_relay_bootstrap_watchers",
            )
        )

    def restart(self) -> None:
        """SIGTERM every instance, then start them again on their ports."""
        self.stop()
        _start_all(self.instances)

    def stop(self) -> None:
        """SIGTERM every instance still running, side by side, and wait for them."""
        running = [instance for instance in self.instances if instance.alive()]
        if running:
            with ThreadPoolExecutor(len(running)) as pool:
                list(pool.map(RelayProcess.stop, running))


class ClusterFactory(Protocol):
    def __call__(
        self,
        count: int = 3,
        env: Mapping[str, str] | None = None,
        server: RedisServer | None = None,
    ) -> Cluster: ...


def _start_all(instances: Sequence[RelayProcess]) -> None:
    """Start relays side by side (each waits for its own /health); all or none keep running."""
    with ThreadPoolExecutor(len(instances)) as pool:
        outcomes = [pool.submit(instance.start) for instance in instances]
    failures = [outcome.exception() for outcome in outcomes if outcome.exception()]
    if failures:
        for instance in instances:
            with contextlib.suppress(AssertionError):
                instance.kill()
        raise AssertionError(f"a cluster instance did not start: {failures[0]}")


@contextmanager
def running_cluster(
    redis_server: RedisServer, count: int, env: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """``count`` instances on a fresh database of ``redis_server``, stopped afterwards."""
    settings = {**CLUSTER_ENV, "AMESH_REDIS_URL": fresh_database(redis_server), **(env or {})}
    instances = [RelayProcess(relay_env(settings)) for _ in range(count)]
    _start_all(instances)
    cluster = Cluster(instances)
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def cluster_behind_nginx(
    redis_server: RedisServer,
    directory: Path,
    env: Mapping[str, str] | None = None,
    count: int = 3,
) -> Iterator[Cluster]:
    """``count`` instances behind nginx (plain HTTP); :attr:`Cluster.port` is nginx's."""
    settings = {**BEHIND_NGINX_ENV, **(env or {})}
    with (
        running_cluster(redis_server, count, settings) as cluster,
        running_nginx(directory, [i.port for i in cluster.instances], tls=False) as port,
    ):
        cluster.port = port
        yield cluster


Connect = Callable[[Any], Awaitable[Client]]
