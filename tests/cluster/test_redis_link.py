"""The cluster's raw Redis link (``relay/_redislink.py``) against a real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from authmesh.relay._redislink import RedisLink
from tests.support.redisproc import RedisServer


async def test_publish_subscribe_and_replies_in_order(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url(7), decode_responses=True)
    received: list[str] = []
    arrived = asyncio.Event()

    async def on_message(data: str) -> None:
        received.append(data)
        if len(received) == 3:
            arrived.set()

    link = RedisLink(client, "amesh:test:link", on_message, lambda exc: None)
    await link.open()
    try:
        texts = ["one", "two | with a bar", "ünïcode \ud800"[:-1]]
        counts = await asyncio.gather(*(link.publish("amesh:test:link", t) for t in texts))
        assert counts == [1, 1, 1]
        await asyncio.wait_for(arrived.wait(), 5)
        assert received == texts
        assert await link.command("SET", "amesh:test:k", "v") == "OK"
        assert await link.command("EVAL", "return {ARGV[1], 7}", "0", "x") == ["x", 7]
        with pytest.raises(ResponseError):
            await link.command("INCR", "amesh:test:k")  # not an integer
        assert await link.command("GET", "amesh:test:k") == "v"  # replies stay in step
    finally:
        await link.close()
        await client.aclose()


async def test_a_lost_redis_fails_waiting_commands_and_reports_once(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    client = redis.Redis.from_url(server.url(), decode_responses=True)
    losses: list[BaseException] = []
    lost = asyncio.Event()

    async def ignore(data: str) -> None:
        return None

    def on_lost(exc: BaseException) -> None:
        losses.append(exc)
        lost.set()

    link = RedisLink(client, "amesh:test:lost", ignore, on_lost)
    await link.open()
    try:
        server.stop()
        await asyncio.wait_for(lost.wait(), 10)  # both readers notice; one report
        assert len(losses) == 1
        with pytest.raises(ConnectionError):
            await link.publish("amesh:test:lost", "late")
    finally:
        await link.close()
        await client.aclose()
        server.stop()
