"""The relay sections of ``pairing.json``: ``relay_pairing_observed`` and
``bootstrap_reference_relay``, exercised against a real relay process.
"""

from __future__ import annotations

import json
from typing import Any

from tests.conformance.ledger import record
from tests.support.relay_clients import Client, open_client, wait_idle
from tests.support.relayproc import RelayProcess
from tests.support.vectorfiles import section

OBSERVED = section("pairing.json", "relay_pairing_observed")
BOOTSTRAP = section("pairing.json", "bootstrap_reference_relay")


async def _client(relay: RelayProcess, ip: str) -> Client:
    return await open_client(relay, {"X-Forwarded-For": ip})


async def test_relay_pairing_observed(shared_relay: RelayProcess) -> None:
    """The reference CLI's view of one relay session, step by step, from one client IP."""
    ip = "10.97.0.1"
    by_label = {item["label"]: (index, item) for index, item in enumerate(OBSERVED)}

    def case(prefix: str) -> tuple[int, dict[str, Any]]:
        return next(v for k, v in by_label.items() if k.startswith(prefix))

    async def exchange(client: Client, prefix: str) -> Client:
        index, item = case(prefix)
        await client.send(item["sent"])
        for expected in item["received"]:
            assert await client.recv() == expected, item["label"]
        record("pairing.json", "relay_pairing_observed", index)
        return client

    target = await _client(shared_relay, ip)
    controller = await _client(shared_relay, ip)
    third = await _client(shared_relay, ip)
    try:
        await exchange(target, "listen with a 5-digit OTC")
        await exchange(target, "listen OK")
        await exchange(target, "unknown message type")
        await exchange(target, "non-JSON frame")
        await exchange(controller, "connect OK")
        index, item = case("what the listening side received")
        # The target already read its ack above; peer_found is what remains.
        assert item["received"][0] == '{"type":"ack","message":"session_open"}'
        assert await target.recv() == item["received"][1]
        record("pairing.json", "relay_pairing_observed", index)
        await exchange(third, "a third socket connects")
        await exchange(third, "second listen on an OTC that is in use")
        await exchange(third, "connect to an unknown OTC")
        # The reference refuses this listen (it counted every attempt). Ours counts failed
        # connects apart from codes opened (H4: failures must not stop the people
        # behind one address from opening codes), and this address opened only two so far.
        index, item = case("further listen from the same IP")
        assert item["received"] == ['{"type":"error","code":"rate_limited"}']
        await third.send(item["sent"])
        assert await third.recv() == '{"type":"ack","message":"session_open"}'
        record("pairing.json", "relay_pairing_observed", index)
        index, item = case("controller socket closes mid-session")
        await controller.close()
        assert await target.recv() == item["received"][0]
        record("pairing.json", "relay_pairing_observed", index)
    finally:
        for client in (target, controller, third):
            await client.close()

    # Forwarding cases need a live session: a fresh pair from another address.
    target = await _client(shared_relay, "10.97.0.2")
    controller = await _client(shared_relay, "10.97.0.2")
    try:
        await target.send({"type": "listen", "otc": "654322"})
        assert await target.recv_json() == {"type": "ack", "message": "session_open"}
        await controller.send({"type": "connect", "otc": "654322"})
        assert await target.recv_json() == {"type": "peer_found"}
        assert await controller.recv_json() == {"type": "peer_found"}
        for prefix in ("data frame with extra fields", "data frame without payload", "done from"):
            index, item = case(prefix)
            await controller.send(item["sent"])
            assert await target.recv() == item["received_by_peer"][0]
            record("pairing.json", "relay_pairing_observed", index)
        index, item = case("data after done")
        await controller.send(item["sent"])
        assert item["received_by_peer"] == []
        await controller.sync()
        await target.sync()  # pong is the next frame: nothing was forwarded
        record("pairing.json", "relay_pairing_observed", index)
    finally:
        await target.close()
        await controller.close()
    await wait_idle(shared_relay)


async def test_bootstrap_reference_relay(shared_relay: RelayProcess) -> None:
    """The SDK target and a scripted controller watcher, through our relay."""
    ip = "10.97.1.1"
    watcher = await _client(shared_relay, ip)
    other = await _client(shared_relay, ip)
    sdk: Client | None = None
    try:
        frames = BOOTSTRAP["watcher_frames"]
        runs = BOOTSTRAP["runs"]
        await watcher.send(frames[0]["text"])
        assert await watcher.recv() == frames[1]["text"]
        for index in (0, 1):
            record("pairing.json", "bootstrap_reference_relay.watcher_frames", index)

        # Run 0: the first bootstrap_init reaches the watcher, the ack reaches the SDK.
        sdk = await _client(shared_relay, ip)
        first = runs[0]
        await sdk.send(first["sdk_frames"][0]["text"])
        assert await watcher.recv() == frames[2]["text"]
        record("pairing.json", "bootstrap_reference_relay.watcher_frames", 2)
        await watcher.send(frames[3]["text"])
        record("pairing.json", "bootstrap_reference_relay.watcher_frames", 3)
        forwarded = json.loads(await sdk.recv())
        reference = json.loads(first["sdk_frames"][1]["text"])
        # W4: the reference dropped controllerSig, so its SDK failed with a TypeError; ours
        # forwards it, which is what the SDK needs.
        assert "controllerSig" not in reference
        assert forwarded == {
            **reference,
            "controllerSig": json.loads(frames[3]["text"])["controllerSig"],
        }
        record("pairing.json", "bootstrap_reference_relay.runs", 0)

        # Run 1: replaying the same token is refused.
        await sdk.send(runs[1]["sdk_frames"][0]["text"])
        assert await sdk.recv() == runs[1]["sdk_frames"][1]["text"]
        record("pairing.json", "bootstrap_reference_relay.runs", 1)
        # Run 2: nobody watches this jti.
        await sdk.send(runs[2]["sdk_frames"][0]["text"])
        assert await sdk.recv() == runs[2]["sdk_frames"][1]["text"]
        record("pairing.json", "bootstrap_reference_relay.runs", 2)

        await watcher.send(frames[4]["text"])
        assert await watcher.recv() == frames[5]["text"]
        for index in (4, 5):
            record("pairing.json", "bootstrap_reference_relay.watcher_frames", index)

        for index, case in enumerate(BOOTSTRAP["watcher_error_cases"]):
            await other.send(case["sent"])
            assert [await other.recv() for _ in case["received"]] == case["received"]
            record("pairing.json", "bootstrap_reference_relay.watcher_error_cases", index)
    finally:
        for client in (watcher, other, sdk):
            if client is not None:
                await client.close()
    await wait_idle(shared_relay)
