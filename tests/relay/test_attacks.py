"""Each hostile-client attack (H1-H5 of docs/security.md) once against a real relay process.

The relay trusts one proxy hop, so ``X-Forwarded-For`` lets one test play hundreds of source
addresses from loopback. The rules themselves are tested on the core with a fake clock in
``test_core_attacks.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from authmesh.core._keys import PrivateKey
from authmesh.core.shell._challenge import ChallengeScheme
from tests.relay.test_agent_protocol2 import register_v2
from tests.support.relay_clients import Client, open_client
from tests.support.relayproc import RelayProcess

ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}
WAITING_CODE = "482916"


def err(code: str) -> dict[str, str]:
    return {"type": "error", "code": code}


async def from_address(relay: RelayProcess, ip: str) -> Client:
    return await open_client(relay, {"X-Forwarded-For": ip})


async def guess_three_times(relay: RelayProcess, ip: str) -> list[Any]:
    client = await from_address(relay, ip)
    try:
        return [await client.request({"type": "connect", "otc": f"00000{i}"}) for i in range(3)]
    finally:
        await client.close()


async def test_340_addresses_cannot_lock_pairing_for_everyone(relay_factory: Any) -> None:
    relay = relay_factory({"AMESH_TRUST_PROXY": "1"})
    target = await from_address(relay, "192.0.2.10")
    assert await target.request({"type": "listen", "otc": WAITING_CODE}) == ACK
    addresses = [f"10.{i // 256}.{i % 256}.7" for i in range(340)]
    answers: list[Any] = []
    for batch in range(0, len(addresses), 50):
        rounds = [guess_three_times(relay, ip) for ip in addresses[batch : batch + 50]]
        for replies in await asyncio.gather(*rounds):
            answers += replies
    assert answers.count(err("otc_not_found")) >= 1000  # the global budget was used up
    controller = await from_address(relay, "198.51.100.20")
    assert await controller.request({"type": "connect", "otc": WAITING_CODE}) == PEER_FOUND
    assert await target.recv_json() == PEER_FOUND
    new_target = await from_address(relay, "192.0.2.30")
    new_controller = await from_address(relay, "198.51.100.30")
    assert await new_target.request({"type": "listen", "otc": "111222"}) == ACK
    assert await new_controller.request({"type": "connect", "otc": "111222"}) == PEER_FOUND
    for client in (target, controller, new_target, new_controller):
        await client.close()


async def test_one_socket_cannot_enumerate_codes(relay_factory: Any) -> None:
    relay = relay_factory({})
    prober = await open_client(relay)
    answers = []
    for code in range(15):
        answers.append(await prober.request({"type": "listen", "otc": f"{code:06d}"}))
        await prober.send({"type": "done"})
    assert answers == [ACK] * 10 + [err("rate_limited")] * 5
    await prober.close()


async def test_one_address_cannot_flood_an_agent_with_shell_requests(relay_factory: Any) -> None:
    relay = relay_factory({"AMESH_TRUST_PROXY": "1"})
    key = PrivateKey.generate()
    agent = await from_address(relay, "192.0.2.200")
    assert await register_v2(agent, key, ChallengeScheme.V2) == {"type": "agent_registered"}
    request = {
        "type": "shell",
        "targetDeviceId": key.device_id,
        "targetPublicKey": key.public_key_b64,
    }
    answers = []
    for _ in range(25):
        requester = await from_address(relay, "203.0.113.66")
        answers.append(await requester.request(request))
        await requester.close()
    assert answers == [PEER_FOUND] * 20 + [err("rate_limited")] * 5
    forwarded = [await agent.recv_json() for _ in range(16)]  # the per-agent pending cap
    assert all(frame["type"] == "shell_request" for frame in forwarded)
    await agent.close()


async def test_protocol_mismatch_reaches_the_waiting_side(relay_factory: Any) -> None:
    relay = relay_factory({})
    target, controller = await open_client(relay), await open_client(relay)
    assert await target.request({"type": "listen", "otc": WAITING_CODE, "protocol": 2}) == ACK
    mismatch = await controller.request({"type": "connect", "otc": WAITING_CODE})
    assert mismatch == {"type": "error", "code": "protocol_mismatch", "protocol": 2}
    told = {"type": "error", "code": "protocol_mismatch", "protocol": 1}
    assert await target.recv_json() == told
    assert (await target.closed())[0] == 1000
    await controller.close()
