"""Relay memory per idle WebSocket connection, at 10,000 connections.

The relay is warmed up (a few hundred connections opened and closed), its resident set size is
read, then ``--connections`` WebSockets are opened and left idle; once ``/metrics`` counts all of
them and the RSS has stopped moving, the growth divided by the number of connections is the cost
of one idle connection. A second round of the same connections shows whether closed connections
leave memory behind (RSS grows again) or the allocator merely keeps it for reuse. Kernel socket
buffers are not part of a process's RSS and so not counted.

    .venv/bin/python bench/relay_idle_rss.py [--connections 10000] [--relay-src DIR]

The script raises its open-file limit (inherited by the relay) with ``resource``. The relay runs
with default settings except the per-IP connection cap (everything comes from 127.0.0.1) and an
idle timeout longer than the run. Target: at most 12 KiB per idle connection.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from websockets.asyncio.client import ClientConnection, connect

from relay_harness import (
    CpuClock,
    RelayProcess,
    print_report,
    raise_fd_limit,
    relay,
    rss_bytes,
)

WARMUP_CONNECTIONS = 300
OPENING_AT_ONCE = 100
SETTLE_DEADLINE_S = 30.0
STABLE_FOR_S = 1.0


def relay_settings(connections: int) -> dict[str, str]:
    return {
        "AMESH_MAX_CONNECTIONS": str(connections),
        "AMESH_MAX_CONNECTIONS_PER_IP": str(connections),
        "AMESH_IDLE_TIMEOUT": "3600",
    }


async def open_many(url: str, count: int) -> list[ClientConnection]:
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one() -> ClientConnection:
        async with gate:
            return await connect(url, compression=None, ping_interval=None, open_timeout=30)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_all(sockets: list[ClientConnection]) -> None:
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one(ws: ClientConnection) -> None:
        async with gate:
            await ws.close()

    await asyncio.gather(*(one(ws) for ws in sockets))


async def settled_rss(pid: int) -> int:
    """RSS once it has not changed for STABLE_FOR_S (or at the deadline)."""
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    last, since = rss_bytes(pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = rss_bytes(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= STABLE_FOR_S:
            break
    return last


async def wait_for_connections(running: RelayProcess, expected: int) -> float:
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    while True:
        seen = running.metric("authmesh_relay_connections")
        if seen == expected or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def measure(running: RelayProcess, connections: int) -> dict[str, object]:
    url, pid = running.ws_url, running.pid
    await close_all(await open_many(url, min(WARMUP_CONNECTIONS, connections)))
    await wait_for_connections(running, 0)
    baseline = await settled_rss(pid)
    client_baseline = rss_bytes()

    clock = CpuClock(pid, "self")
    clock.start()
    sockets = await open_many(url, connections)
    (relay_cpu, client_cpu), open_wall = clock.read()
    counted = await wait_for_connections(running, connections)
    loaded = await settled_rss(pid)
    client_loaded = rss_bytes()
    health = running.health()
    await close_all(sockets)
    await wait_for_connections(running, 0)
    after_close = await settled_rss(pid)
    # A second round tells a leak (RSS grows again) from memory the allocator keeps for reuse.
    sockets = await open_many(url, connections)
    await wait_for_connections(running, connections)
    second_round = await settled_rss(pid)
    await close_all(sockets)
    await wait_for_connections(running, 0)
    per_connection = (loaded - baseline) / connections
    return {
        "connections": connections,
        "relay_counted": int(counted),
        "health_while_open": health,
        "relay_rss_baseline_mib": round(baseline / 2**20, 1),
        "relay_rss_loaded_mib": round(loaded / 2**20, 1),
        "relay_rss_after_close_mib": round(after_close / 2**20, 1),
        "relay_rss_second_round_mib": round(second_round / 2**20, 1),
        "relay_bytes_per_idle_connection": round(per_connection),
        "relay_kib_per_idle_connection": round(per_connection / 1024, 2),
        "client_kib_per_connection": round((client_loaded - client_baseline) / connections / 1024),
        "open_all_s": round(open_wall, 2),
        "relay_cpu_ms_per_open": round(1000 * relay_cpu / connections, 3),
        "client_cpu_ms_per_open": round(1000 * client_cpu / connections, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--relay-src", help="the src directory of the relay to measure")
    args = parser.parse_args()
    raise_fd_limit(args.connections + 1024)
    settings = relay_settings(args.connections)
    with relay(settings, args.relay_src) as running:
        results = asyncio.run(measure(running, args.connections))
    print_report("relay_idle_rss", settings, results)


if __name__ == "__main__":
    main()
