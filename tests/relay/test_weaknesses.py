"""The weaknesses of ``spec/relay.md`` §8 and §11 that need a real relay process: frames
that must not crash it, client addresses taken from ``X-Forwarded-For``, the connection cap,
shutdown, transport timers, ``/metrics``, ``/health`` and the logs.

The rules themselves are tested on the core with a fake clock (``test_core_rules.py``,
``test_core_attacks.py``). Tests on the shared relay use their own client address
(``X-Forwarded-For``; the shared relay trusts one proxy hop) so limits never leak between tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from authmesh.core._b64 import b64url_encode
from authmesh.core._keys import PrivateKey
from tests.support.relay_clients import Client, http_request, open_client, pair, wait_idle
from tests.support.relayproc import RelayProcess

ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}
_addresses = itertools.count(1)


def err(code: str) -> dict[str, str]:
    return {"type": "error", "code": code}


@pytest.fixture
async def clients(shared_relay: RelayProcess) -> AsyncIterator[Callable[..., Any]]:
    """``await clients()`` opens a socket on the shared relay from this test's own address."""
    address = f"10.96.{next(_addresses)}.1"
    opened: list[Client] = []

    async def factory(ip: str = address) -> Client:
        client = await open_client(shared_relay, {"X-Forwarded-For": ip})
        opened.append(client)
        return client

    yield factory
    for client in opened:
        await client.close()
    await wait_idle(shared_relay)


async def register_agent(client: Client, key: PrivateKey, public_key: str | None = None) -> Any:
    await client.send(
        {"type": "agent", "deviceId": key.device_id, "publicKey": public_key or key.public_key_b64}
    )
    challenge = (await client.recv_json())["challenge"]
    await client.send(
        {"type": "agent_challenge_response", "sig": b64url_encode(key.sign(challenge.encode()))}
    )
    return await client.recv_json()


# ---------------------------------------------------------------------------- W1


MALFORMED = [
    "null",
    "[]",
    '"listen"',
    "1e999",
    "NaN",
    '{"type":"listen","otc":NaN}',
    "[" * 5000 + "]" * 5000,
    '{"type":"data","payload":' + "[" * 5000 + "]" * 5000 + "}",
    '{"type":"listen","otc":{"a":1}}',
    '{"type":"connect","otc":null,"protocol":"2"}',
    '{"type":"listen","otc":"123456","protocol":3}',
    '{"type":"bootstrap_watch","jti":["x"]}',
    '{"type":"bootstrap_init","jti":{"a":[1]},"token":5}',
    '{"type":"bootstrap_init","jti":"bt_x","token":5}',
    '{"type":"bootstrap_ack","jti":[1,2]}',
    '{"type":"bootstrap_reject","jti":"bt_x","error":{"a":1}}',
    '{"type":"agent","deviceId":1,"publicKey":{"x":1}}',
    '{"type":"agent","deviceId":"am_x","publicKey":42}',
    '{"type":"agent_challenge_response","sig":123}',
    '{"type":"agent_challenge_response","sig":{"a":1}}',
    '{"type":"shell","targetDeviceId":[],"targetPublicKey":true}',
    '{"type":"shell","targetDeviceId":"am_x","targetPublicKey":"%%%"}',
    '{"type":"listen","otc":"\\ud800"}',
    '{"type":"data","payload":"\\udfff"}',
]


async def test_w1_no_frame_crashes_or_wedges_the_relay(
    shared_relay: RelayProcess, clients: Any
) -> None:
    """W1: every malformed frame gets an error frame (or silence) and the relay keeps going."""
    attacker = await clients()
    for frame in MALFORMED:
        await attacker.send(frame)
        for reply in await attacker.replies():
            expected = ("error", "bootstrap_reject", "peer_found", "agent_challenge")
            assert reply["type"] in expected, (frame, reply)
    # the socket is still usable and so is the relay
    await attacker.send('{"type":"agent","deviceId":"am_x","publicKey":"AAAA"}')
    assert (await attacker.recv_json())["type"] == "agent_challenge"
    await attacker.send('{"type":"agent_challenge_response","sig":123}')
    assert await attacker.recv_json() == err("invalid_signature")
    assert shared_relay.alive()
    await pair(shared_relay, "111222")


# ---------------------------------------------------------------------------- W6: client addresses


async def test_w6_right_most_forwarded_entry_is_the_client(clients: Any) -> None:
    """W6: with one trusted hop, the entry our proxy appended counts — not a client's claim."""
    real = "10.96.251.7"
    for n in range(6):
        spoofer = await clients(f"198.51.100.{n}, {real}")
        reply = await spoofer.request({"type": "connect", "otc": f"92000{n}"})
        assert reply == (err("otc_not_found") if n < 5 else err("rate_limited"))


async def test_w6_trusted_hops_and_unset_trust(relay_factory: Any, dial: Any) -> None:
    two_hops = relay_factory({"AMESH_TRUST_PROXY": "2"})
    for n in range(6):
        client = await dial(two_hops, {"X-Forwarded-For": f"1.1.1.{n}, 10.0.0.9, 10.0.0.1"})
        reply = await client.request({"type": "connect", "otc": f"93000{n}"})
        assert reply == (err("otc_not_found") if n < 5 else err("rate_limited"))
        await client.close()
    direct = relay_factory({})
    for n in range(6):
        client = await dial(direct, {"X-Forwarded-For": f"1.1.1.{n}"})
        reply = await client.request({"type": "connect", "otc": f"94000{n}"})
        assert reply == (err("otc_not_found") if n < 5 else err("rate_limited"))
        await client.close()


async def test_w6_connections_per_ip_are_capped(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({"AMESH_MAX_CONNECTIONS_PER_IP": "3"})
    first = [await dial(relay) for _ in range(3)]
    extra = await dial(relay)
    assert await extra.closed() == (1013, "too_many_connections")
    for client in first:
        await client.sync()
        await client.close()


# ---------------------------------------------------------------------------- W18


async def test_w18_sigterm_tells_peers_and_exits_zero(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({})
    target = await dial(relay)
    assert await target.request({"type": "listen", "otc": "482940"}) == ACK
    relay.terminate()
    assert await target.closed() == (1001, "going_away")
    assert relay.stop() == 0


# ---------------------------------------------------------------------------- transport


async def test_unattached_idle_sockets_are_closed(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({"AMESH_IDLE_TIMEOUT": "0.6", "AMESH_SWEEP_INTERVAL": "0.05"})
    idle = await dial(relay)
    target = await dial(relay)
    assert await target.request({"type": "listen", "otc": "482961"}) == ACK
    assert await idle.closed() == (1000, "idle_timeout")
    await target.sync()  # a socket with a session is not idle-closed


async def test_handshake_timeout_drops_clients_that_never_upgrade(relay_factory: Any) -> None:
    relay = relay_factory({"AMESH_HANDSHAKE_TIMEOUT": "0.3"})
    slow = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    try:
        slow.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finishes the request
        assert slow.recv(1024) == b""  # the relay hung up
    finally:
        slow.close()
    await pair(relay)


def test_metrics_endpoint_and_404(shared_relay: RelayProcess) -> None:
    relay = shared_relay
    status, _, headers, body = http_request(relay.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    for name in (
        "authmesh_relay_connections",
        "authmesh_relay_sessions",
        "authmesh_relay_pairings_completed_total",
        "authmesh_relay_rejections_total",
        "authmesh_relay_rate_limit_hits_total",
        "authmesh_relay_bytes_forwarded_total",
    ):
        assert name in text
    assert http_request(relay.port, "GET", "/metrics/")[0] == 404


async def test_logs_are_structured_and_never_contain_secrets(relay_factory: Any, dial: Any) -> None:
    """§1: codes, jtis, tokens, keys, signatures and device ids never reach the logs."""
    relay = relay_factory(
        {"AMESH_LOG_LEVEL": "debug", "AMESH_LOG_FORMAT": "json", "AMESH_OTC_FAILURE_BUDGET": "2"}
    )
    key = PrivateKey.generate()
    secrets = ["864209", "bt_secret_jti", "tok_secret", key.device_id, key.public_key_b64]
    target, controller = await dial(relay), await dial(relay)
    assert await target.request({"type": "listen", "otc": "864209"}) == ACK
    await controller.send({"type": "connect", "otc": "864209"})
    await target.recv_json()
    await controller.recv_json()
    for _ in range(2):
        intruder = await dial(relay)
        await intruder.request({"type": "connect", "otc": "864209"})  # burns the code
    watcher, sdk = await dial(relay), await dial(relay)
    await watcher.request({"type": "bootstrap_watch", "jti": "bt_secret_jti"})
    await sdk.send({"type": "bootstrap_init", "jti": "bt_secret_jti", "token": "tok_secret"})
    await watcher.recv_json()
    agent = await dial(relay)
    assert await register_agent(agent, key) == {"type": "agent_registered"}
    await agent.send("null")
    await agent.recv_json()
    # stop in a thread: the clients' event loop must keep answering the relay's close frames
    assert await asyncio.to_thread(relay.stop) == 0
    lines = relay.stderr_text().splitlines()
    assert lines, "the relay logged nothing at debug level"
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(entry)
        for secret in secrets:
            assert secret not in line
    assert any(json.loads(line).get("event") == "otc_burned" for line in lines)


def test_w12_health_keeps_the_reference_shape(shared_relay: RelayProcess) -> None:
    """W12: monitors rely on the shape; counts stay (documented as a presence side channel)."""
    status, _, headers, body = http_request(shared_relay.port, "HEAD", "/health")
    assert (status, body, headers["content-type"]) == (200, b"", "application/json;charset=utf-8")
    assert set(shared_relay.health()) == {"status", "sessions", "agents"}
