"""Flow control of a real relay process: bursts arrive whole, keepalive runs in the sweep.

A peer that stops reading for good is covered by test_abuse.py
(``test_a_peer_that_stops_reading_is_dropped``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.relay_clients import open_client, wait_for

BURST_FRAMES = 2000


async def paired(relay: Any, dial: Any, otc: str) -> tuple[Any, Any]:
    target, controller = await dial(relay), await dial(relay)
    assert await target.request({"type": "listen", "otc": otc}) == {
        "type": "ack",
        "message": "session_open",
    }
    assert await controller.request({"type": "connect", "otc": otc}) == {"type": "peer_found"}
    assert await target.recv_json() == {"type": "peer_found"}
    return target, controller


async def test_a_burst_reaches_a_normally_reading_peer_complete_and_in_order(
    relay_factory: Any, dial: Any
) -> None:
    """Regression: the relay used to cut the receiver off (1006) after ~209 burst frames."""
    relay = relay_factory({})
    target, controller = await paired(relay, dial, "271828")
    frames = [
        json.dumps({"type": "data", "payload": f"{n:06d}" + "x" * 70}, separators=(",", ":"))
        for n in range(BURST_FRAMES)
    ]

    async def burst() -> None:
        for frame in frames:
            await controller.send(frame)

    sender = asyncio.create_task(burst())
    received = [await target.recv() for _ in range(BURST_FRAMES)]
    await sender
    assert received == frames
    await target.sync()  # the receiver is still connected and served


async def test_keepalive_drops_a_socket_that_never_answers_pings(relay_factory: Any) -> None:
    """Pings come from the relay's sweep (no task per socket); silence past the timeout ends
    the socket while a socket that answers stays."""
    relay = relay_factory({"AMESH_PING_INTERVAL": "0.2", "AMESH_PING_TIMEOUT": "0.5"})
    alive, silent = await open_client(relay), await open_client(relay)
    silent.ws.transport.pause_reading()  # never sees a ping, so never answers one
    metric = 'authmesh_relay_state_entries{map="connections"}'
    await wait_for(lambda: relay.metrics()[metric] == 1, timeout=10)
    await alive.sync()
    await alive.close()
    silent.ws.transport.abort()
