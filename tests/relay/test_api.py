"""The programmatic API: ``create_relay_server``, ``start``/``stop``, async context manager."""

from __future__ import annotations

import subprocess
import sys

from websockets.asyncio.client import connect

from authmesh.relay import RelayConfig, create_relay_server
from tests.support.relay_clients import Client
from tests.support.relayproc import REPO


async def test_create_start_stop_and_context_manager() -> None:
    relay = create_relay_server(port=0, host="127.0.0.1", env={"AMESH_MAX_SESSIONS": "7"})
    assert isinstance(relay.config, RelayConfig) and relay.config.max_sessions == 7
    async with relay:
        assert relay.port != 0
        assert relay.url == f"ws://127.0.0.1:{relay.port}/ws"
        async with connect(relay.url) as ws:
            client = Client(ws)
            assert await client.request({"type": "listen", "otc": "123456"}) == {
                "type": "ack",
                "message": "session_open",
            }
            assert relay.core.health() == '{"status":"ok","sessions":1,"agents":0}'
        await relay.stop()  # idempotent with the context manager's own stop
    await relay.start()
    await relay.stop()


async def test_env_defaults_and_overrides() -> None:
    relay = create_relay_server(env={"PORT": "4567", "AMESH_TRUST_PROXY": "yes"})
    assert (relay.port, relay.config.trust_proxy, relay.config.host) == (4567, 1, "0.0.0.0")
    assert create_relay_server(port=0, env={"PORT": "4567"}).port == 0
    assert create_relay_server(env={}).port == 3001


def test_the_embedding_example_in_the_docs_runs() -> None:
    """docs/self-hosting.md "Embedding the relay": its code block runs as shown."""
    text = (REPO / "docs" / "self-hosting.md").read_text()
    section = text.split("## Embedding the relay", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("listening on port ")
