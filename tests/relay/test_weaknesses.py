"""One regression test (at least) per weakness of ``spec/relay.md`` §8 and §11, plus the
pairing-v2/bootstrap contract, each against a real relay process.

Tests on the shared relay use their own client address (``X-Forwarded-For``; the shared relay
trusts one proxy hop) so limits never leak between tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from authmesh.core.b64 import b64encode, b64url_encode
from authmesh.core.keys import CURVE_ORDER, PrivateKey, load_public_key
from tests.relay.conftest import (
    Client,
    RelayProcess,
    http_request,
    open_client,
    pair,
    wait_for,
    wait_idle,
    watcher_acks,
)

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


async def paired(clients: Callable[..., Any], otc: str, **extra: Any) -> tuple[Client, Client]:
    target, controller = await clients(), await clients()
    assert await target.request({"type": "listen", "otc": otc, **extra}) == ACK
    found = await controller.request({"type": "connect", "otc": otc, **extra})
    assert await target.recv_json() == found
    return target, controller


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


async def test_w1_null_is_unknown_type(clients: Any) -> None:
    client = await clients()
    await client.send("null")
    assert await client.recv_json() == err("unknown_type")


# ---------------------------------------------------------------------------- W2


async def test_w2_bindings_are_cleared_when_a_session_ends(clients: Any) -> None:
    """W2/W16: after done, the old peers are unbound; a new session on the code is safe."""
    target, controller = await paired(clients, "482916")
    await target.send({"type": "done"})
    assert await controller.recv_json() == {"type": "done"}
    newcomer = await clients()
    assert await newcomer.request({"type": "listen", "otc": "482916"}) == ACK
    await controller.send({"type": "data", "payload": "injected"})
    await controller.close()
    await newcomer.sync()  # nothing injected, no peer_disconnected
    # the old target may start something new
    assert await target.request({"type": "listen", "otc": "482917"}) == ACK


async def test_w2_a_socket_in_a_session_cannot_listen_connect_or_shell(clients: Any) -> None:
    target, controller = await paired(clients, "482918")
    for client in (target, controller):
        for message in (
            {"type": "listen", "otc": "482919"},
            {"type": "connect", "otc": "482918"},
            {"type": "shell", "targetDeviceId": "am_x", "targetPublicKey": "AAAA"},
        ):
            assert await client.request(message) == err("already_in_session")
    await target.send({"type": "data", "payload": "still paired"})
    assert await controller.recv_json() == {"type": "data", "payload": "still paired"}


async def test_w2_self_connect_is_refused(clients: Any) -> None:
    target = await clients()
    assert await target.request({"type": "listen", "otc": "482920"}) == ACK
    assert await target.request({"type": "connect", "otc": "482920"}) == err("already_in_session")


async def test_w2_peer_disconnect_frees_the_remaining_socket(clients: Any) -> None:
    target, controller = await paired(clients, "482921")
    await controller.close()
    assert await target.recv_json() == err("peer_disconnected")
    assert await target.request({"type": "listen", "otc": "482922"}) == ACK


# ---------------------------------------------------------------------------- W3, W4


async def test_w3_only_the_watcher_answers_and_the_watch_survives(clients: Any) -> None:
    watcher, target, stranger = await clients(), await clients(), await clients()
    jti = "bt_w3_foreign"
    assert await watcher.request({"type": "bootstrap_watch", "jti": jti}) == {
        "type": "bootstrap_watching",
        "jti": jti,
    }
    await target.send({"type": "bootstrap_init", "jti": jti, "token": "t", "targetPubKey": "k"})
    assert (await watcher.recv_json())["type"] == "bootstrap_init"
    for kind in ("bootstrap_ack", "bootstrap_reject"):
        assert await stranger.request({"type": kind, "jti": jti, "publicKey": "x"}) == err(
            "not_watcher"
        )
    await target.sync()  # nothing forged reached the target
    await watcher_acks(watcher, target, jti)


async def test_w3_target_disconnect_keeps_the_watch(clients: Any) -> None:
    watcher, target = await clients(), await clients()
    jti = "bt_w3_target_leaves"
    await watcher.request({"type": "bootstrap_watch", "jti": jti})
    await target.send({"type": "bootstrap_init", "jti": jti})
    await watcher.recv_json()
    await target.close()
    other = await clients()
    assert await other.request({"type": "bootstrap_watch", "jti": jti}) == err(
        "jti_already_watched"
    )


async def test_w3_bootstrap_init_is_rate_limited_with_a_bootstrap_reject(clients: Any) -> None:
    """W3: failures only, answered in the SDK's vocabulary (never an error frame)."""
    target = await clients()
    replies = [
        await target.request({"type": "bootstrap_init", "jti": f"bt_guess_{n}"}) for n in range(12)
    ]
    assert replies[:10] == [{"type": "bootstrap_reject", "error": "no_watcher"}] * 10
    assert replies[10:] == [{"type": "bootstrap_reject", "error": "rate_limited"}] * 2


async def test_w4_contract_fields_are_forwarded_and_type_checked(clients: Any) -> None:
    watcher, target = await clients(), await clients()
    jti = "bt_w4_fields"
    await watcher.request({"type": "bootstrap_watch", "jti": jti})
    await target.send(
        {
            "type": "bootstrap_init",
            "jti": jti,
            "token": "T",
            "targetPubKey": "K",
            "targetSig": "S" * 256,
            "protocol": 2,
            "extra": "dropped",
        }
    )
    assert await watcher.recv() == json.dumps(
        {
            "type": "bootstrap_init",
            "jti": jti,
            "token": "T",
            "targetPubKey": "K",
            "targetSig": "S" * 256,
            "protocol": 2,
        },
        separators=(",", ":"),
    )
    too_long = {"type": "bootstrap_ack", "jti": jti, "controllerSig": "S" * 257}
    assert await watcher.request(too_long) == err("invalid_message")
    bad_error = {"type": "bootstrap_reject", "jti": jti, "error": "e" * 65}
    assert await watcher.request(bad_error) == err("invalid_message")
    await watcher.send(
        {"type": "bootstrap_reject", "jti": jti, "controllerPubKey": "C", "error": "declined"}
    )
    assert await target.recv_json() == {
        "type": "bootstrap_reject",
        "jti": jti,
        "controllerPubKey": "C",
        "error": "declined",
    }


async def test_w4_malformed_init_fields_get_a_bootstrap_reject(clients: Any) -> None:
    watcher, target = await clients(), await clients()
    jti = "bt_w4_malformed"
    await watcher.request({"type": "bootstrap_watch", "jti": jti})
    for bad in ({"targetSig": "S" * 257}, {"token": 1}, {"protocol": "2"}, {"protocol": 1.5}):
        reply = await target.request({"type": "bootstrap_init", "jti": jti, **bad})
        assert reply == {"type": "bootstrap_reject", "error": "invalid_message"}
    await watcher.sync()  # the jti was neither forwarded nor burned
    await target.send({"type": "bootstrap_init", "jti": jti})
    assert (await watcher.recv_json())["type"] == "bootstrap_init"


# ---------------------------------------------------------------------------- W5, W20


async def test_w5_device_id_must_derive_from_the_key(clients: Any) -> None:
    victim, mallory = PrivateKey.generate(), PrivateKey.generate()
    squatter = await clients()
    await squatter.send(
        {"type": "agent", "deviceId": victim.device_id, "publicKey": mallory.public_key_b64}
    )
    challenge = (await squatter.recv_json())["challenge"]
    await squatter.send(
        {"type": "agent_challenge_response", "sig": b64url_encode(mallory.sign(challenge.encode()))}
    )
    assert await squatter.recv_json() == err("invalid_device_id")
    agent = await clients()
    assert await register_agent(agent, victim) == {"type": "agent_registered"}


async def test_w5_keys_are_compared_decoded(clients: Any) -> None:
    """An agent registered with its uncompressed key is found by its compressed key."""
    key = PrivateKey.generate()
    numbers = load_public_key(key.public_key).public_numbers()
    uncompressed = b64encode(
        b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    )
    agent, controller = await clients(), await clients()
    assert await register_agent(agent, key, uncompressed) == {"type": "agent_registered"}
    await controller.send(
        {"type": "shell", "targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}
    )
    assert await agent.recv_json() == PEER_FOUND
    assert await controller.recv_json() == PEER_FOUND


async def test_w5_failed_registrations_are_rate_limited(clients: Any) -> None:
    client = await clients()
    key = PrivateKey.generate()
    for _ in range(10):
        await client.send({"type": "agent", "deviceId": key.device_id, "publicKey": "AAAA"})
        await client.recv_json()
        assert await client.request({"type": "agent_challenge_response", "sig": "AAAA"}) == err(
            "invalid_signature"
        )
    assert await client.request(
        {"type": "agent", "deviceId": key.device_id, "publicKey": key.public_key_b64}
    ) == err("rate_limited")


async def test_w20_high_s_challenge_signature_is_accepted(clients: Any) -> None:
    key = PrivateKey.generate()
    agent = await clients()
    await agent.send({"type": "agent", "deviceId": key.device_id, "publicKey": key.public_key_b64})
    challenge = (await agent.recv_json())["challenge"]
    low = key.sign(challenge.encode())
    high = low[:32] + (CURVE_ORDER - int.from_bytes(low[32:], "big")).to_bytes(32, "big")
    await agent.send({"type": "agent_challenge_response", "sig": b64url_encode(high)})
    assert await agent.recv_json() == {"type": "agent_registered"}


# ---------------------------------------------------------------------------- W6


async def test_w6_successes_never_count_against_an_ip(clients: Any) -> None:
    for n in range(8):
        target, controller = await paired(clients, f"70000{n}")
        await target.close()
        await controller.close()


async def test_w6_failures_count_and_invalid_codes_do_not(clients: Any) -> None:
    client = await clients()
    for _ in range(5):
        assert await client.request({"type": "connect", "otc": "12345"}) == err("invalid_otc")
    for otc in ("910001", "910002", "910003", "910004", "910005"):
        assert await client.request({"type": "connect", "otc": otc}) == err("otc_not_found")
    assert await client.request({"type": "connect", "otc": "910006"}) == err("rate_limited")
    # another address is unaffected
    other = await clients("10.96.250.1")
    assert await other.request({"type": "connect", "otc": "910007"}) == err("otc_not_found")


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


async def test_w6_a_live_code_burns_after_its_failure_budget(clients: Any) -> None:
    target, controller = await paired(clients, "482930")
    for n in range(5):
        intruder = await clients(f"10.96.252.{n}")
        assert await intruder.request({"type": "connect", "otc": "482930"}) == err(
            "peer_already_connected"
        )
    for peer in (target, controller):
        assert await peer.recv_json() == err("otc_burned")
        assert (await peer.closed())[0] == 1000


async def test_w6_connections_per_ip_are_capped(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({"AMESH_MAX_CONNECTIONS_PER_IP": "3"})
    first = [await dial(relay) for _ in range(3)]
    extra = await dial(relay)
    assert await extra.closed() == (1013, "too_many_connections")
    for client in first:
        await client.sync()
        await client.close()


# ---------------------------------------------------------------------------- W7, W9, W10


async def test_w7_shell_idle_time_is_extended_by_traffic(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({"AMESH_SHELL_IDLE_TIMEOUT": "0.5", "AMESH_SWEEP_INTERVAL": "0.05"})
    key = PrivateKey.generate()
    agent, controller = await dial(relay), await dial(relay)
    await register_agent(agent, key)
    await controller.send(
        {"type": "shell", "targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}
    )
    assert await agent.recv_json() == PEER_FOUND
    assert await controller.recv_json() == PEER_FOUND
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 1.2:  # over two idle periods, but never idle
        await controller.send({"type": "data", "payload": "keepalive"})
        assert await agent.recv_json() == {"type": "data", "payload": "keepalive"}
        await asyncio.sleep(0.05)
    assert relay.health()["sessions"] == 1
    assert await agent.recv_json() == err("session_expired")  # once traffic stops
    assert await controller.recv_json() == err("session_expired")
    assert relay.health() == {"status": "ok", "sessions": 0, "agents": 1}


async def test_w10_shell_sessions_have_their_own_larger_cap(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory(
        {"AMESH_PAIRING_SESSION_BYTES": "1000", "AMESH_SHELL_SESSION_BYTES": "5000"}
    )
    key = PrivateKey.generate()
    agent, controller = await dial(relay), await dial(relay)
    await register_agent(agent, key)
    await controller.send(
        {"type": "shell", "targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}
    )
    await agent.recv_json()
    await controller.recv_json()
    chunk = {"type": "data", "payload": "x" * 972}  # 1000 bytes on the wire
    for _ in range(5):
        await controller.send(chunk)
        assert await agent.recv_json() == chunk
    await controller.send(chunk)
    assert await controller.recv_json() == err("session_data_limit")
    assert (await controller.closed())[0] == 1000
    assert await agent.recv_json() == err("peer_disconnected")
    await agent.sync()  # the agent's control socket stays open (W7)
    assert relay.health()["agents"] == 1


# ---------------------------------------------------------------------------- W15, W18, W19


async def test_w15_watches_per_socket_are_capped_and_all_removed_on_close(
    shared_relay: RelayProcess, clients: Any
) -> None:
    watcher = await clients()
    for n in range(10):
        await watcher.request({"type": "bootstrap_watch", "jti": f"bt_w15_{n}"})
    ip2 = "10.96.253.1"
    second = await clients(ip2)
    for n in range(10, 16):
        await second.request({"type": "bootstrap_watch", "jti": f"bt_w15_{n}"})
    for n in range(16, 26):
        await watcher.request({"type": "bootstrap_watch", "jti": f"bt_w15_{n}"})
    # 16 per socket (the first socket hit the cap at its 17th jti; failures then count)
    assert shared_relay.metrics()["authmesh_relay_bootstrap_watchers"] == 22
    await watcher.close()
    await wait_for(lambda: shared_relay.metrics()["authmesh_relay_bootstrap_watchers"] == 6)


async def test_w15_rewatch_does_not_extend_the_lifetime(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({"AMESH_WATCHER_TTL": "0.8", "AMESH_SWEEP_INTERVAL": "0.05"})
    watcher = await dial(relay)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await watcher.request({"type": "bootstrap_watch", "jti": "bt_w15_ttl"})
    while relay.metrics()["authmesh_relay_bootstrap_watchers"] == 1:
        await watcher.request({"type": "bootstrap_watch", "jti": "bt_w15_ttl"})
        assert loop.time() - started < 3, "the watch never expired"
        await asyncio.sleep(0.05)


async def test_w18_sigterm_tells_peers_and_exits_zero(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({})
    target = await dial(relay)
    assert await target.request({"type": "listen", "otc": "482940"}) == ACK
    relay.terminate()
    assert await target.closed() == (1001, "going_away")
    assert relay.stop() == 0


async def test_w19_no_unsolicited_frames_on_a_waiting_pairing_socket(
    relay_factory: Any, dial: Any
) -> None:
    relay = relay_factory({"AMESH_SWEEP_INTERVAL": "0.02"})
    target = await dial(relay)
    assert await target.request({"type": "listen", "otc": "482941"}) == ACK
    await asyncio.sleep(0.3)  # many sweeps run meanwhile
    await target.sync()  # the pong is the very next frame


# ---------------------------------------------------------------------------- contract v2


async def test_contract_v2_peer_found_carries_protocol_2(clients: Any) -> None:
    target, controller = await paired(clients, "482950", protocol=2)
    # paired() checked both sides got the same frame; check its exact text once more
    await target.send({"type": "data", "payload": "v2"})
    assert await controller.recv() == '{"type":"data","payload":"v2"}'


async def test_contract_v2_peer_found_text(clients: Any) -> None:
    target, controller = await clients(), await clients()
    assert await target.request({"type": "listen", "otc": "482951", "protocol": 2}) == ACK
    await controller.send({"type": "connect", "otc": "482951", "protocol": 2})
    assert await controller.recv() == '{"type":"peer_found","protocol":2}'
    assert await target.recv() == '{"type":"peer_found","protocol":2}'


async def test_contract_v1_peer_found_is_byte_identical(clients: Any) -> None:
    target, controller = await clients(), await clients()
    await target.request({"type": "listen", "otc": "482953", "protocol": 1})
    await controller.send({"type": "connect", "otc": "482953"})
    assert await controller.recv() == '{"type":"peer_found"}'
    assert await target.recv() == '{"type":"peer_found"}'


@pytest.mark.parametrize("protocol", [3, 0, "2", True, None, 2.5, [2]])
async def test_contract_invalid_protocol_is_invalid_message(clients: Any, protocol: Any) -> None:
    client = await clients()
    assert await client.request({"type": "listen", "otc": "482954", "protocol": protocol}) == err(
        "invalid_message"
    )


# ---------------------------------------------------------------------------- §11 and timeouts


async def test_sas_confirmation_frame_after_the_exchange(clients: Any) -> None:
    """§11: later CLIs keep the socket open and send sas_confirmed within the session."""
    target, controller = await paired(clients, "482960")
    for payload in ("eph_T", "eph_C", "id_C", "id_T", "sas_confirmed"):
        await target.send({"type": "data", "payload": payload})
        assert await controller.recv_json() == {"type": "data", "payload": payload}


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


@pytest.mark.parametrize("otc", [123456, ["123456"], {"otc": "123456"}, 123456.0, True])
async def test_w11_only_string_codes_are_codes(clients: Any, otc: Any) -> None:
    client = await clients()
    assert await client.request({"type": "listen", "otc": otc}) == err("invalid_otc")


def test_w12_health_keeps_the_reference_shape(shared_relay: RelayProcess) -> None:
    """W12: monitors rely on the shape; counts stay (documented as a presence side channel)."""
    status, _, headers, body = http_request(shared_relay.port, "HEAD", "/health")
    assert (status, body, headers["content-type"]) == (200, b"", "application/json;charset=utf-8")
    assert set(shared_relay.health()) == {"status", "sessions", "agents"}
