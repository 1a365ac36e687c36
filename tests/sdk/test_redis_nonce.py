"""Redis nonce stores against a real redis-server (see ``redis_url`` in conftest)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from authmesh.sdk._client import AuthMeshAuth
from authmesh.sdk._verifier import Rejection, Verifier
from authmesh.sdk.redis_nonce import AsyncRedisNonceStore, NonceStoreUnavailable, RedisNonceStore
from tests.sdk.harness import DEADLINE_SECONDS, free_port
from tests.support.sdk import TEST_HMAC_KEY, trusted_store, vector_key

K1 = vector_key("K1")
REPO = Path(__file__).resolve().parents[2]


def test_set_nx_semantics(redis_url: str) -> None:
    store = RedisNonceStore(redis_url, key_prefix="test:semantics:")
    assert store.check_and_store("am_x:n1", 60)
    assert not store.check_and_store("am_x:n1", 60)
    assert store.check_and_store("am_y:n1", 60)  # scoped per device
    ttl = redis.Redis.from_url(redis_url).ttl("test:semantics:am_x:n1")
    assert 0 < ttl <= 60
    store.close()


async def test_async_store(redis_url: str) -> None:
    store = AsyncRedisNonceStore(redis_url, key_prefix="test:async:")
    assert await store.check_and_store("k", 30)
    assert not await store.check_and_store("k", 30)
    await store.aclose()


def _dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_redis_down_fails_closed_unless_told_otherwise(tmp_path: Path) -> None:
    with pytest.raises(NonceStoreUnavailable):
        RedisNonceStore(_dead_url(), timeout_seconds=0.5).check_and_store("k", 10)
    assert RedisNonceStore(_dead_url(), timeout_seconds=0.5, fail_open=True).check_and_store(
        "k", 10
    )
    store = trusted_store(tmp_path / "home", [(K1, "controller", 1)])
    verifier = Verifier(store, nonce_store=RedisNonceStore(_dead_url(), timeout_seconds=0.5))
    request = httpx.Request("GET", "http://api.example.com/x")
    signed = next(AuthMeshAuth(K1).sync_auth_flow(request))
    with pytest.raises(Rejection) as caught:
        verifier.verify("GET", "/x", signed.headers["authorization"], "api.example.com", b"")
    assert (caught.value.status, caught.value.error) == (500, "internal_error")


@pytest.fixture
def two_servers(redis_url: str, tmp_path: Path) -> Iterator[list[int]]:
    """Two separate server processes sharing one Redis."""
    home = tmp_path / "home"
    trusted_store(home, [(K1, "controller", 1)])
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.sdk.redis_app",
                str(home),
                TEST_HMAC_KEY.hex(),
                redis_url,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        ports = []
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()  # the app prints its port once listening
            assert line.startswith("PORT "), f"server did not start: {line!r}"
            ports.append(int(line.split()[1]))
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(DEADLINE_SECONDS)


def test_one_nonce_hundred_concurrent_requests_two_processes(two_servers: list[int]) -> None:
    signed = next(AuthMeshAuth(K1).sync_auth_flow(httpx.Request("GET", "http://x/replay")))
    headers = {"Authorization": signed.headers["authorization"]}

    async def fire() -> list[int]:
        async with httpx.AsyncClient(timeout=DEADLINE_SECONDS) as client:
            responses = await asyncio.gather(
                *(
                    client.get(f"http://127.0.0.1:{two_servers[i % 2]}/replay", headers=headers)
                    for i in range(100)
                )
            )
        return [response.status_code for response in responses]

    statuses = asyncio.run(fire())
    assert statuses.count(200) == 1
    assert statuses.count(401) == 99
