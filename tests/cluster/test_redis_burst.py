"""A burst of pairings on an instance with Redis: more messages wait for Redis at once than
the Redis client has connections, and the instance must queue them rather than take the
exhausted pool for a lost Redis (which made it degraded and stalled every session in flight).
"""

from __future__ import annotations

import asyncio

from tests.support.cluster import ClusterFactory, health_of
from tests.support.relay_clients import pair

# redis-py's asyncio pool holds 100 connections by default.
BURST = 150


async def test_a_burst_of_pairings_keeps_redis_up(cluster_factory: ClusterFactory) -> None:
    relay = cluster_factory(1)[0]
    await asyncio.gather(*(pair(relay, otc=f"{300_000 + n:06d}") for n in range(BURST)))
    assert health_of(relay.port)[0] == 200
    assert relay.metrics()["authmesh_relay_redis_losses_total"] == 0
    assert relay.metrics()["authmesh_relay_pairings_completed_total"] == BURST
