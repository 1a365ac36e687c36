"""Protocol-2 agents: domain-prefixed challenge and one relay socket per shell session.

Spec shell.md S1 (relay-chosen strings signed without a domain prefix) and S3 (one socket
carrying every session of an agent). Legacy agents keep the reference behaviour, tested in
test_shell_relay.py and test_core_rules.py; docs/protocol.md describes the protocol-2 messages.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from authmesh.core._b64 import b64url_encode
from authmesh.core._keys import PrivateKey
from authmesh.core.shell._challenge import ChallengeScheme, challenge_message
from tests.relay.test_weaknesses import PEER_FOUND, err


async def register_v2(client: Any, key: PrivateKey, scheme: ChallengeScheme) -> Any:
    await client.send(
        {"type": "agent", "deviceId": key.device_id, "publicKey": key.public_key_b64, "protocol": 2}
    )
    challenge = await client.recv_json()
    assert challenge["protocol"] == 2 and uuid.UUID(challenge["challenge"]).version == 4
    signed = challenge_message(challenge["challenge"], scheme, agent_device_id=key.device_id)
    await client.send({"type": "agent_challenge_response", "sig": b64url_encode(key.sign(signed))})
    return await client.recv_json()


async def test_s1_protocol_2_agents_sign_the_domain_prefixed_challenge(
    dial: Any, fresh_relay: Any
) -> None:
    key = PrivateKey.generate()
    assert await register_v2(await dial(fresh_relay), key, ChallengeScheme.V2) == {
        "type": "agent_registered"
    }
    # A raw (legacy) signature is refused once protocol 2 was asked for.
    other = PrivateKey.generate()
    assert await register_v2(await dial(fresh_relay), other, ChallengeScheme.V1) == err(
        "invalid_signature"
    )


async def shell_request(controller: Any, key: PrivateKey) -> None:
    await controller.send(
        {"type": "shell", "targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}
    )


async def test_s3_each_session_gets_its_own_agent_socket(dial: Any, fresh_relay: Any) -> None:
    key = PrivateKey.generate()
    agent = await dial(fresh_relay)
    await register_v2(agent, key, ChallengeScheme.V2)
    sessions = []
    for _ in range(2):  # the second request does not disturb the first session
        controller = await dial(fresh_relay)
        await shell_request(controller, key)
        assert await controller.recv_json() == PEER_FOUND
        announce = await agent.recv_json()
        assert announce["type"] == "shell_request" and uuid.UUID(announce["session"])
        session_socket = await dial(fresh_relay)
        await session_socket.send({"type": "agent_session", "session": announce["session"]})
        assert await session_socket.recv_json() == PEER_FOUND
        sessions.append((controller, session_socket))
    for controller, session_socket in sessions:
        await session_socket.send({"type": "data", "payload": "from-agent"})
        assert await controller.recv_json() == {"type": "data", "payload": "from-agent"}
        await controller.send({"type": "data", "payload": "from-controller"})
        assert await session_socket.recv_json() == {"type": "data", "payload": "from-controller"}
    first_controller, first_socket = sessions[0]
    await first_socket.close()
    assert await first_controller.recv_json() == err("peer_disconnected")
    await agent.sync()  # the registration socket never carried a session
    assert fresh_relay.health() == {"status": "ok", "sessions": 1, "agents": 1}


async def test_s3_a_session_token_is_single_use(dial: Any, fresh_relay: Any) -> None:
    key = PrivateKey.generate()
    agent, controller = await dial(fresh_relay), await dial(fresh_relay)
    await register_v2(agent, key, ChallengeScheme.V2)
    await shell_request(controller, key)
    await controller.recv_json()
    token = (await agent.recv_json())["session"]
    claimed, replay, guess = (
        await dial(fresh_relay),
        await dial(fresh_relay),
        await dial(fresh_relay),
    )
    await claimed.send({"type": "agent_session", "session": token})
    assert await claimed.recv_json() == PEER_FOUND
    await replay.send({"type": "agent_session", "session": token})
    assert await replay.recv_json() == err("no_pending_session")
    await guess.send({"type": "agent_session", "session": str(uuid.uuid4())})
    assert await guess.recv_json() == err("no_pending_session")
    assert (await guess.closed())[0] == 1000


async def test_unclaimed_requests_expire_without_a_trace(relay_factory: Any, dial: Any) -> None:
    relay = relay_factory({"AMESH_HANDSHAKE_TIMEOUT": "0.2", "AMESH_SWEEP_INTERVAL": "0.05"})
    key = PrivateKey.generate()
    agent, controller = await dial(relay), await dial(relay)
    await register_v2(agent, key, ChallengeScheme.V2)
    await shell_request(controller, key)
    await controller.recv_json()
    token = (await agent.recv_json())["session"]
    late = await dial(relay)
    await agent.sync()
    await asyncio.sleep(0.5)  # past the 0.2 s claim deadline: time itself is under test
    await late.send({"type": "agent_session", "session": token})
    assert await late.recv_json() == err("no_pending_session")
    await shell_request(controller, key)  # the controller may ask again
    assert await controller.recv_json() == PEER_FOUND
