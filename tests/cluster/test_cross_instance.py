"""Clients pair, bootstrap and hit rate limits whatever instances of a cluster they land on.

Clients connect straight to the instances' ports here, so which instance each socket lands on
is chosen by the test (nginx in front is exercised by the transcript replay).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from authmesh.core._keys import PrivateKey
from authmesh.core.shell._challenge import ChallengeScheme
from authmesh.relay import create_relay_server
from tests.relay.test_agent_protocol2 import register_v2, shell_request
from tests.relay.test_weaknesses import register_agent
from tests.support.cluster import Cluster, ClusterFactory, Connect, fresh_database
from tests.support.redisproc import RedisServer
from tests.support.relay_clients import Client, open_client, wait_for, watcher_acks

ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}
ERROR_RATE_LIMITED = {"type": "error", "code": "rate_limited"}
PAIRINGS = 500
# Pairings in flight at once: enough to overlap, few enough for two cores and the
# per-instance connection limits.
BATCH = 100
IDLE_DEADLINE_S = 10.0


async def cross_instance_pairing(cluster: Cluster, number: int) -> None:
    """Target on instance ``number % n``, controller on the next one; a ``data`` frame each
    way arrives intact, then ``done`` reaches the controller."""
    count = len(cluster.instances)
    otc = f"{700_000 + number:06d}"
    target = await open_client(cluster[number % count])
    controller = await open_client(cluster[(number + 1) % count])
    try:
        assert await target.request({"type": "listen", "otc": otc}) == ACK
        assert await controller.request({"type": "connect", "otc": otc}) == PEER_FOUND
        assert await target.recv_json() == PEER_FOUND
        to_controller, to_target = secrets.token_urlsafe(150), secrets.token_urlsafe(150)
        await target.send({"type": "data", "payload": to_controller})
        assert await controller.recv_json() == {"type": "data", "payload": to_controller}
        await controller.send({"type": "data", "payload": to_target})
        assert await target.recv_json() == {"type": "data", "payload": to_target}
        await target.send({"type": "done"})
        assert await controller.recv_json() == {"type": "done"}
    finally:
        await target.close()
        await controller.close()


async def test_pairings_across_instances_all_complete(cluster: Cluster) -> None:
    for start in range(0, PAIRINGS, BATCH):
        batch = range(start, min(start + BATCH, PAIRINGS))
        await asyncio.gather(*(cross_instance_pairing(cluster, n) for n in batch))
    await wait_for(cluster.idle, IDLE_DEADLINE_S)
    assert cluster.alive()


async def test_bootstrap_token_is_single_use_across_instances_and_restarts(
    cluster_factory: ClusterFactory, connect: Connect
) -> None:
    cluster = cluster_factory(3)
    a, b, c = cluster.instances
    jti = f"bt_{secrets.token_hex(16)}"
    init = {"type": "bootstrap_init", "jti": jti, "token": "T", "targetPubKey": "K"}
    used = {"type": "bootstrap_reject", "error": "token_already_used"}

    async def watch_on_a() -> Client:
        watcher = await connect(a)
        watching = {"type": "bootstrap_watching", "jti": jti}
        assert await watcher.request({"type": "bootstrap_watch", "jti": jti}) == watching
        return watcher

    async def replay_is_refused(via: Client) -> None:
        watcher = await watch_on_a()
        reply = await via.request(init)
        assert {k: v for k, v in reply.items() if k != "jti"} == used, reply
        assert reply.get("jti", jti) == jti, reply
        await watcher.sync()  # the refused replay did not reach the watcher
        await watcher.close()

    watcher, target = await watch_on_a(), await connect(b)
    await target.send(init)
    assert await watcher.recv_json() == init
    await watcher_acks(watcher, target, jti)
    await watcher.close()
    await target.close()

    await replay_is_refused(await connect(c))
    # Off the event loop, which answers the stopping instances' closing handshakes.
    await asyncio.to_thread(cluster.restart)
    await replay_is_refused(await connect(b))


FAILURE_LIMIT = 6


def guessed_code(attempt: int) -> dict[str, str]:
    return {"type": "connect", "otc": f"{900_000 + attempt:06d}"}


def guessed_token(attempt: int) -> dict[str, str]:
    return {"type": "bootstrap_init", "jti": f"bt_guess_{attempt}", "token": "T"}


@pytest.mark.parametrize(
    ("guess", "failed", "limited"),
    [
        (guessed_code, {"type": "error", "code": "otc_not_found"}, ERROR_RATE_LIMITED),
        (
            guessed_token,
            {"type": "bootstrap_reject", "error": "no_watcher"},
            {"type": "bootstrap_reject", "error": "rate_limited"},
        ),
    ],
    ids=["pairing", "bootstrap"],
)
async def test_failure_limit_counts_over_every_instance(
    cluster_factory: ClusterFactory,
    connect: Connect,
    guess: Callable[[int], dict[str, str]],
    failed: dict[str, str],
    limited: dict[str, str],
) -> None:
    limits = {
        "AMESH_PAIRING_FAILURE_LIMIT": str(FAILURE_LIMIT),
        "AMESH_BOOTSTRAP_FAILURE_LIMIT": str(FAILURE_LIMIT),
    }
    cluster = cluster_factory(3, limits)
    clients = [await connect(instance) for instance in cluster.instances]
    # Each instance sees only a third of the failures; the limit still holds on every one.
    for attempt in range(FAILURE_LIMIT):
        assert await clients[attempt % 3].request(guess(attempt)) == failed, attempt
    for client in clients:
        assert await client.request(guess(FAILURE_LIMIT)) == limited


async def test_programmatic_api_instances_pair_across(redis_server: RedisServer) -> None:
    """``create_relay_server(redis_url=...)``: two in-process instances form a cluster."""
    url = fresh_database(redis_server)
    first, second = (
        create_relay_server(port=0, host="127.0.0.1", env={}, redis_url=url) for _ in range(2)
    )
    async with first, second:
        target, controller = await open_client(first), await open_client(second)
        try:
            assert await target.request({"type": "listen", "otc": "640001"}) == ACK
            assert await controller.request({"type": "connect", "otc": "640001"}) == PEER_FOUND
            assert await target.recv_json() == PEER_FOUND
        finally:
            await target.close()
            await controller.close()


async def test_every_watch_of_a_socket_is_found_from_other_instances(
    cluster_factory: ClusterFactory, connect: Connect
) -> None:
    a, b = cluster_factory(2).instances
    watcher = await connect(a)
    jtis = [f"bt_{secrets.token_hex(16)}" for _ in range(2)]
    for jti in jtis:
        watching = {"type": "bootstrap_watching", "jti": jti}
        assert await watcher.request({"type": "bootstrap_watch", "jti": jti}) == watching
    for jti in jtis:
        target = await connect(b)
        init = {"type": "bootstrap_init", "jti": jti, "token": "T", "targetPubKey": "K"}
        await target.send(init)
        assert await watcher.recv_json() == init, f"watch number {jtis.index(jti) + 1}"


async def test_agent_registering_again_elsewhere_replaces_the_first(
    cluster_factory: ClusterFactory, connect: Connect
) -> None:
    a, b, c = cluster_factory(3).instances
    key = PrivateKey.generate()
    first, second = await connect(a), await connect(b)
    assert await register_agent(first, key) == {"type": "agent_registered"}
    assert await register_agent(second, key) == {"type": "agent_registered"}
    assert await first.closed() == (1000, "replaced")
    controller = await connect(c)
    await controller.send(
        {"type": "shell", "targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}
    )
    assert await controller.recv_json() == PEER_FOUND
    assert await second.recv_json() == PEER_FOUND


async def test_protocol_2_shell_session_spans_three_instances(
    cluster_factory: ClusterFactory, connect: Connect
) -> None:
    """Agent on A, controller on B, the agent's session socket on C; the token is single use."""
    a, b, c = cluster_factory(3).instances
    key = PrivateKey.generate()
    agent, controller = await connect(a), await connect(b)
    assert await register_v2(agent, key, ChallengeScheme.V2) == {"type": "agent_registered"}
    await shell_request(controller, key)
    assert await controller.recv_json() == PEER_FOUND
    announce = await agent.recv_json()
    assert announce["type"] == "shell_request"
    session_socket = await connect(c)
    await session_socket.send({"type": "agent_session", "session": announce["session"]})
    assert await session_socket.recv_json() == PEER_FOUND
    await session_socket.send({"type": "data", "payload": "from-agent"})
    assert await controller.recv_json() == {"type": "data", "payload": "from-agent"}
    await controller.send({"type": "data", "payload": "from-controller"})
    assert await session_socket.recv_json() == {"type": "data", "payload": "from-controller"}
    replay = await connect(b)
    await replay.send({"type": "agent_session", "session": announce["session"]})
    assert await replay.recv_json() == {"type": "error", "code": "no_pending_session"}


async def test_prefix_and_listen_limits_count_over_every_instance(
    cluster_factory: ClusterFactory,
) -> None:
    """H1, H2: per-prefix failure counts and per-address listen counts are shared like the
    per-address failure counts, so spreading an attack over instances gains nothing."""
    limits = {
        "AMESH_TRUST_PROXY": "1",
        "AMESH_PAIRING_FAILURE_LIMIT": "2",
        "AMESH_PREFIX_LIMIT_FACTOR": "2",  # 4 failures per /24
        "AMESH_LISTEN_LIMIT": "3",
    }
    cluster = cluster_factory(3, limits)

    async def request(instance: int, ip: str, message: dict[str, str]) -> Any:
        client = await open_client(cluster[instance], {"X-Forwarded-For": ip})
        try:
            return await client.request(message)
        finally:
            await client.close()

    # Four addresses of one /24 fail once each, on different instances...
    for host in range(4):
        failed = await request(host % 3, f"10.50.0.{host}", guessed_code(host))
        assert failed == {"type": "error", "code": "otc_not_found"}
    # ...so a fifth address of that /24 is refused everywhere, another network is not.
    for instance in range(3):
        assert await request(instance, "10.50.0.99", guessed_code(9)) == ERROR_RATE_LIMITED
    other = await request(0, "10.51.0.1", guessed_code(9))
    assert other == {"type": "error", "code": "otc_not_found"}
    # One address opens three codes over three instances; the fourth is refused.
    for instance in range(3):
        listen = {"type": "listen", "otc": f"{910_000 + instance:06d}"}
        assert await request(instance, "10.52.0.1", listen) == ACK
    listen = {"type": "listen", "otc": "910009"}
    assert await request(1, "10.52.0.1", listen) == ERROR_RATE_LIMITED
