"""Every scenario of ``relay-transcripts.json`` replayed through nginx in front of a cluster.

nginx balances round robin without affinity, so the sockets of one scenario land on
different instances and every exchange between them crosses Redis. The replay, the scenarios'
adaptations to our hardened relay and their settings are those of ``tests/relay`` (whose
replay records the vectors in the conformance ledger; nothing is recorded here). What differs
in a cluster, and how it is checked instead:

* nginx is one more trusted proxy hop, so each scenario's ``AMESH_TRUST_PROXY`` is raised by one.
* ``/health`` through nginx is one instance's view: its shape is checked there, and the counts
  the scenario expects are checked against the sum over every instance.
* The start-up lines are checked on every instance, each with its own port.
* nginx answers paths other than ``/ws`` and ``/health`` itself (site config): only the 404
  status is checked, not the relay's body.
* Caps (connections, sessions) stay per instance (cluster contract): scenarios about a cap
  run against a one-instance cluster, still with Redis and behind nginx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from authmesh.relay._config import parse_trust_proxy
from tests.relay.replay import Replay, Step, custom
from tests.relay.test_transcripts import ADAPTED, SCENARIOS, SHARED_ENV, relay_env
from tests.support.cluster import Cluster, cluster_behind_nginx
from tests.support.redisproc import RedisServer
from tests.support.relay_clients import wait_for

CAP_SETTINGS = ("AMESH_MAX_CONNECTIONS", "AMESH_MAX_SESSIONS")
IDLE_DEADLINE_S = 10.0


def cluster_settings(name: str) -> tuple[int, dict[str, str]]:
    """(instances, relay environment) for a scenario: its own settings with nginx as one
    more trusted hop; the environment is empty for scenarios the shared cluster can run."""
    env = relay_env(SCENARIOS[name]["relay_config"])
    adapted = ADAPTED.get(name)
    if adapted is not None:
        env.update(adapted.env)
    if not env or env == SHARED_ENV:
        return 3, {}
    trusted = parse_trust_proxy(env.get("AMESH_TRUST_PROXY", "0"))
    env["AMESH_TRUST_PROXY"] = str(trusted + 1)
    return (1 if any(cap in env for cap in CAP_SETTINGS) else 3), env


# Scenarios sharing settings run one after the other, so each cluster starts once.
ORDER = sorted(SCENARIOS, key=lambda name: json.dumps(cluster_settings(name), sort_keys=True))


def startup_lines(expected: list[str]) -> Step:
    async def check(replay: Replay) -> None:
        for instance in replay.relay.instances:
            for line in expected:
                ours = line.replace("<HOST>", "127.0.0.1").replace("<PORT>", str(instance.port))
                assert ours in instance.stdout_lines, (ours, instance.stdout_lines)

    return custom(check)


def cluster_health(step: Step) -> Step:
    expected = json.loads(step["body"])
    content_type = dict(step["headers"])["Content-Type"]

    async def check(replay: Replay) -> None:
        status, _, headers, body = replay.pending_http
        assert status == 200 and headers.get("content-type") == content_type, status
        assert json.loads(body).keys() == expected.keys()
        await wait_for(lambda: replay.relay.health() == expected)

    return custom(check)


def nginx_not_found() -> Step:
    async def check(replay: Replay) -> None:
        assert replay.pending_http[0] == 404, replay.pending_http

    return custom(check)


def for_cluster(steps: list[Step]) -> list[Step]:
    out: list[Step] = []
    stdout = [step["line"] for step in steps if step.get("from") == "relay-stdout"]
    if stdout:
        out.append(startup_lines(stdout))
    for step in steps:
        if step.get("from") == "relay-stdout":
            continue
        if step.get("event") == "http_response" and '"sessions"' in step.get("body", ""):
            out.append(cluster_health(step))
        elif step.get("event") == "http_response" and " 404 " in step["status_line"]:
            out.append(nginx_not_found())
        else:
            out.append(step)
    return out


class ClusterPool:
    """The cluster for the settings asked last; asking for other settings replaces it."""

    def __init__(self, redis_server: RedisServer, directory: Path) -> None:
        self.redis = redis_server
        self.directory = directory
        self.started = 0
        self.key = ""
        self.stack = ExitStack()
        self.cluster: Cluster | None = None

    def get(self, count: int, env: dict[str, str]) -> Cluster:
        key = json.dumps([count, env], sort_keys=True)
        if key != self.key or self.cluster is None or not self.cluster.alive():
            self.close()
            self.started += 1
            directory = self.directory / f"nginx-{self.started}"
            directory.mkdir()
            self.cluster = self.stack.enter_context(
                cluster_behind_nginx(self.redis, directory, env, count)
            )
            self.key = key
        return self.cluster

    def close(self) -> None:
        self.stack.close()
        self.cluster = None


@pytest.fixture(scope="module")
def clusters(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterPool]:
    pool = ClusterPool(redis_server, tmp_path_factory.mktemp("clusters"))
    yield pool
    pool.close()


@pytest.mark.parametrize("name", ORDER)
async def test_transcript_through_the_cluster(name: str, clusters: ClusterPool) -> None:
    steps: list[Step] = list(SCENARIOS[name]["steps"])
    adapted = ADAPTED.get(name)
    if adapted is not None:
        steps = adapted.transform(steps)
    count, env = cluster_settings(name)
    cluster = clusters.get(count, env)
    if env:
        await Replay(cluster, for_cluster(steps)).run()
    else:
        client_ip = f"10.98.{list(SCENARIOS).index(name)}.1"
        await Replay(cluster, for_cluster(steps), client_ip=client_ip).run()
        await wait_for(cluster.idle, IDLE_DEADLINE_S)
