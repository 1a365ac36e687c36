"""deploy/nginx/authmesh-relay.conf in front of a real relay, through a real nginx.

Only the site-specific lines are replaced (certificate paths, the public port and the relay's
port); each replacement must hit exactly once, so a changed config cannot slip past the test.
A client then pairs two WebSockets over TLS through nginx, reads ``/health`` through it, and
shows that with the documented ``AMESH_TRUST_PROXY=1`` a forged ``X-Forwarded-For`` does not buy
a fresh rate-limit bucket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.deploy.http_probe import get_health
from tests.support.nginxproc import NGINX, running_nginx, tls_client
from tests.support.relayproc import RelayFactory

FRAME_DEADLINE_S = 5.0
FAILURE_LIMIT = 3

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (scripts/install-system-deps)"
)


@pytest.fixture
def public_port(tmp_path: Path, relay_factory: RelayFactory) -> Iterator[int]:
    """Port of nginx (TLS, the repository's site config) in front of a running relay."""
    relay = relay_factory(
        {"AMESH_TRUST_PROXY": "1", "AMESH_PAIRING_FAILURE_LIMIT": str(FAILURE_LIMIT)}
    )
    with running_nginx(tmp_path, [relay.port], tls=True) as port:
        yield port


async def received(socket: ClientConnection) -> object:
    return json.loads(await asyncio.wait_for(socket.recv(), FRAME_DEADLINE_S))


async def test_pairing_through_nginx(public_port: int) -> None:
    url = f"wss://127.0.0.1:{public_port}/ws"
    tls = tls_client()
    async with (
        connect(url, ssl=tls, open_timeout=FRAME_DEADLINE_S) as target,
        connect(url, ssl=tls, open_timeout=FRAME_DEADLINE_S) as controller,
    ):
        await target.send(json.dumps({"type": "listen", "otc": "482916"}))
        assert await received(target) == {"type": "ack", "message": "session_open"}
        await controller.send(json.dumps({"type": "connect", "otc": "482916"}))
        assert await received(target) == {"type": "peer_found"}
        assert await received(controller) == {"type": "peer_found"}
        await target.send(json.dumps({"type": "data", "payload": "x" * 1024}))
        assert await received(controller) == {"type": "data", "payload": "x" * 1024}


def test_health_is_published_and_metrics_are_not(public_port: int) -> None:
    status, body = get_health(f"https://127.0.0.1:{public_port}/health", tls_client())
    assert status == 200
    assert body["status"] == "ok"
    assert get_health(f"https://127.0.0.1:{public_port}/metrics", tls_client())[0] == 404


async def test_forged_forwarded_for_does_not_escape_the_rate_limit(public_port: int) -> None:
    """nginx appends the real peer; the relay takes that right-most entry, not the forged one."""
    url = f"wss://127.0.0.1:{public_port}/ws"
    tls = tls_client()
    answers = []
    for attempt in range(FAILURE_LIMIT + 1):
        forged = {"X-Forwarded-For": f"198.51.100.{attempt + 1}"}
        async with connect(url, ssl=tls, additional_headers=forged) as guesser:
            await guesser.send(json.dumps({"type": "connect", "otc": "000000"}))
            answers.append(await received(guesser))
    assert answers == [{"type": "error", "code": "otc_not_found"}] * FAILURE_LIMIT + [
        {"type": "error", "code": "rate_limited"}
    ]
