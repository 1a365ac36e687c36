"""A cluster losing an instance or Redis, and a relay that cannot reach Redis at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

from authmesh.core._keys import PrivateKey
from authmesh.relay._config import redacted_url
from tests.support.cluster import CLUSTER_ENV, Cluster, ClusterFactory, Connect, health_of
from tests.support.redisproc import RedisServer
from tests.support.relay_clients import Client, wait_for
from tests.support.relayproc import RelayProcess, free_port, relay_env

ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}
UNAVAILABLE = {"type": "error", "code": "relay_unavailable"}
INSTANCE_TTL_S = float(CLUSTER_ENV["AMESH_INSTANCE_TTL"])
# The contract: peers of a killed instance hear of it within about the TTL + 1 s.
NOTICE_DEADLINE_S = INSTANCE_TTL_S + 2.0
REDIS_NOTICE_DEADLINE_S = 5.0
EXIT_DEADLINE_S = 15.0


async def paired(
    connect: Connect, target_on: RelayProcess, controller_on: RelayProcess, otc: str
) -> tuple[Client, Client]:
    """A target listening on one instance and a controller connected through another."""
    target = await connect(target_on)
    controller = await connect(controller_on)
    assert await target.request({"type": "listen", "otc": otc}) == ACK
    assert await controller.request({"type": "connect", "otc": otc}) == PEER_FOUND
    assert await target.recv_json() == PEER_FOUND
    return target, controller


async def exchanges_data(one: Client, other: Client, payload: str) -> None:
    await one.send({"type": "data", "payload": payload})
    assert await other.recv_json() == {"type": "data", "payload": payload}
    await other.send({"type": "data", "payload": payload[::-1]})
    assert await one.recv_json() == {"type": "data", "payload": payload[::-1]}


async def test_killed_instance_peers_are_told_and_its_codes_freed(
    cluster_factory: ClusterFactory, connect: Connect
) -> None:
    cluster = cluster_factory(3)
    a, b, c = cluster.instances
    _target, controller = await paired(connect, a, b, "510001")
    waiting = await connect(a)
    assert await waiting.request({"type": "listen", "otc": "510002"}) == ACK

    a.kill()
    started = time.monotonic()
    assert await controller.recv_json(timeout=NOTICE_DEADLINE_S) == {
        "type": "error",
        "code": "peer_disconnected",
    }
    await controller.closed(timeout=NOTICE_DEADLINE_S - (time.monotonic() - started))
    # B has declared A dead, so the waiting listener's code is free on every instance.
    newcomer = await connect(c)
    assert await newcomer.request({"type": "listen", "otc": "510002"}) == ACK
    late = await connect(b)
    assert await late.request({"type": "connect", "otc": "510002"}) == PEER_FOUND
    assert await newcomer.recv_json() == PEER_FOUND
    await exchanges_data(newcomer, late, "after the crash")
    assert b.alive() and c.alive()


async def test_stopped_instance_peers_are_told_at_once(
    cluster_factory: ClusterFactory, connect: Connect
) -> None:
    cluster = cluster_factory(2)
    a, b = cluster.instances
    target, controller = await paired(connect, a, b, "520001")
    # SIGTERM, a graceful shutdown; off the event loop, which answers A's closing handshakes.
    await asyncio.to_thread(a.stop)
    assert await controller.recv_json(timeout=NOTICE_DEADLINE_S) == {
        "type": "error",
        "code": "peer_disconnected",
    }
    await controller.closed()
    assert (await target.closed())[0] == 1001


def degraded(cluster: Cluster) -> bool:
    """Every instance answers /health with 503 degraded (redis_unavailable)."""
    for instance in cluster.instances:
        status, body = health_of(instance.port)
        if (status, body["status"], body.get("reason")) != (503, "degraded", "redis_unavailable"):
            return False
        assert set(body) == {"status", "reason", "sessions", "agents"}, body
    return True


def healthy(cluster: Cluster) -> bool:
    return all(health_of(instance.port)[0] == 200 for instance in cluster.instances)


async def test_redis_lost_and_back(
    cluster_factory: ClusterFactory, private_redis: RedisServer, connect: Connect
) -> None:
    cluster = cluster_factory(3, server=private_redis)
    a, b, c = cluster.instances
    local_target, local_controller = await paired(connect, a, a, "530001")
    cross_target, cross_controller = await paired(connect, a, b, "530002")
    waiting = await connect(c)
    assert await waiting.request({"type": "listen", "otc": "530003"}) == ACK
    await exchanges_data(local_target, local_controller, "before")
    await exchanges_data(cross_target, cross_controller, "before")

    private_redis.stop()
    await wait_for(lambda: degraded(cluster), REDIS_NOTICE_DEADLINE_S)
    key = PrivateKey.generate()
    refused = [
        ({"type": "listen", "otc": "530010"}, UNAVAILABLE),
        ({"type": "connect", "otc": "530003"}, UNAVAILABLE),
        ({"type": "bootstrap_watch", "jti": "bt_lost"}, UNAVAILABLE),
        (
            {"type": "bootstrap_init", "jti": "bt_lost", "token": "T", "targetPubKey": "K"},
            {"type": "bootstrap_reject", "error": "relay_unavailable"},
        ),
        (
            {"type": "agent", "deviceId": key.device_id, "publicKey": key.public_key_b64},
            UNAVAILABLE,
        ),
        (
            {
                "type": "shell",
                "targetDeviceId": key.device_id,
                "targetPublicKey": key.public_key_b64,
            },
            UNAVAILABLE,
        ),
        ({"type": "agent_session", "session": str(uuid.uuid4())}, UNAVAILABLE),
    ]
    for index, (message, answer) in enumerate(refused):
        newcomer = await connect(cluster[index % 3])
        assert await newcomer.request(message) == answer, message
    # The controller's socket was forwarded from B to A through Redis: it cannot go on.
    assert await cross_controller.recv_json() == UNAVAILABLE
    assert (await cross_controller.closed())[0] == 1011
    # Both sockets of this session are on A: it needs no Redis.
    await exchanges_data(local_target, local_controller, "during")
    assert cluster.alive()

    private_redis.start()
    await wait_for(lambda: healthy(cluster), REDIS_NOTICE_DEADLINE_S)
    target, controller = await paired(connect, c, a, "530020")
    await exchanges_data(target, controller, "after")
    await exchanges_data(local_target, local_controller, "after")
    assert cluster.alive()


def test_unreachable_redis_at_start_is_one_clear_line() -> None:
    url = f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("amesh-relay"))],
        env=relay_env({"AMESH_REDIS_URL": url}),
        capture_output=True,
        text=True,
        timeout=EXIT_DEADLINE_S,
    )
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"amesh-relay: cannot reach Redis at {redacted_url(url)} ("), lines
    assert lines[0].endswith("); start Redis or fix AMESH_REDIS_URL."), lines
    assert "s3cret-pass" not in result.stderr + result.stdout
    assert "listening" not in result.stdout
