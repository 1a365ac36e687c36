"""Forwarding latency: a 1 KiB ``data`` frame relayed to the peer and relayed back.

Pairs of sockets are paired once (``listen``/``connect``); then each pair's first socket sends
a ``data`` frame with a 1,024-character payload, the second answers with the same, and the time
until the answer arrives is one round trip (two relay hops). Pairs run side by side, each doing
one round trip at a time; ``--pairs 1`` is the low-load figure.

    .venv/bin/python bench/relay_roundtrip.py [--pairs 1 10 100] [--seconds 4]
        [--load compiled|python] [--round-trips 5000] [--relay-src DIR]

The load comes from the compiled generator (``bench/loadgen/amesh_load.c``), which runs each
level for ``--seconds``; ``--load python`` uses the picows client of ``relay_client.py`` for
``--round-trips`` per level. Both ends of every pair live in the one client process, so a
round trip also includes the client's own handling of two frames: the figures are an upper
bound on the relay's share. Relay CPU per forwarded frame is half its CPU per round trip.
The relay runs with a pairing byte budget and lifetime large enough for the run (defaults:
256 KiB and 60 s, enough for a real pairing, not for thousands of round trips).
Target on 2 cores: p99 at most 1 ms at low load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from relay_client import Client, run
from relay_harness import (
    CpuClock,
    RelayProcess,
    parallel_cpu_cores,
    percentile,
    print_report,
    raise_fd_limit,
    relay,
)
from relay_loadgen import binary, run_load

RELAY_SETTINGS = {
    "AMESH_MAX_CONNECTIONS_PER_IP": "100000",
    "AMESH_LISTEN_LIMIT": "1000000000",
    "AMESH_PAIRING_SESSION_BYTES": str(2**31),
    "AMESH_PAIRING_TTL": "3600",
}
FRAME = json.dumps({"type": "data", "payload": "x" * 1024})
WARMUP_ROUND_TRIPS = 200


async def paired(url: str, otc: str) -> tuple[Client, Client]:
    first, second = await Client.open(url), await Client.open(url)
    first.send(json.dumps({"type": "listen", "otc": otc}))
    await first.expect("ack")
    second.send(json.dumps({"type": "connect", "otc": otc}))
    await first.expect("peer_found")
    await second.expect("peer_found")
    return first, second


async def round_trips(first: Client, second: Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        first.send(FRAME)
        await second.recv()
        second.send(FRAME)
        await first.recv()
        times.append(time.perf_counter() - started)
    return times


async def measure(url: str, relay_pid: int, pairs: int, total: int) -> dict[str, object]:
    sockets = [await paired(url, f"{n:06d}") for n in range(pairs)]
    try:
        await asyncio.gather(*(round_trips(a, b, WARMUP_ROUND_TRIPS) for a, b in sockets))
        capacity = parallel_cpu_cores()
        clock = CpuClock(relay_pid, "self")
        clock.start()
        per_pair = max(1, total // pairs)
        results = await asyncio.gather(*(round_trips(a, b, per_pair) for a, b in sockets))
        (relay_cpu, client_cpu), wall = clock.read()
    finally:
        for a, b in sockets:
            await a.close()
            await b.close()
    times = sorted(t for result in results for t in result)
    return {
        "pairs": pairs,
        "parallel_cpu_cores_before": capacity,
        "round_trips": len(times),
        "round_trips_per_s": round(len(times) / wall, 1),
        "rtt_ms_p50": round(percentile(times, 0.50) * 1000, 3),
        "rtt_ms_p99": round(percentile(times, 0.99) * 1000, 3),
        "rtt_ms_max": round(times[-1] * 1000, 3),
        "relay_cpu_pct": round(100 * relay_cpu / wall, 1),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
        "relay_cpu_us_per_round_trip": round(1e6 * relay_cpu / len(times), 1),
    }


def measure_compiled(running: RelayProcess, pairs: int, seconds: float) -> dict[str, object]:
    capacity = parallel_cpu_cores()
    clock = CpuClock(running.pid)
    clock.start()
    result = run_load("roundtrip", [running.port], pairs, seconds)
    (relay_cpu,), wall = clock.read()
    done = max(1, result.completed)
    return {
        "pairs": pairs,
        "load": "compiled",
        "parallel_cpu_cores_before": capacity,
        "round_trips": result.completed,
        "errors": result.errors,
        "first_errors": result.first_errors,
        "round_trips_per_s": round(result.completed / result.wall_s, 1),
        "rtt_ms_p50": round(result.p50_ms, 3),
        "rtt_ms_p99": round(result.p99_ms, 3),
        "rtt_ms_max": round(result.max_ms, 3),
        "relay_cpu_pct": round(100 * relay_cpu / wall, 1),
        "client_cpu_pct": round(100 * result.cpu_s / wall, 1),
        "relay_cpu_us_per_round_trip": round(1e6 * relay_cpu / done, 1),
        "relay_cpu_us_per_forwarded_frame": round(1e6 * relay_cpu / done / 2, 1),
        "client_cpu_us_per_round_trip": round(1e6 * result.cpu_s / done, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--round-trips", type=int, default=5000, help="per level (python)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per level (compiled)")
    parser.add_argument("--load", choices=("compiled", "python"), default="compiled")
    parser.add_argument("--relay-src", help="the src directory of the relay to measure")
    args = parser.parse_args()
    raise_fd_limit(2 * max(args.pairs) + 1024)
    if args.load == "compiled":
        binary()  # built before any clock starts
    results = {}
    with relay(RELAY_SETTINGS, args.relay_src) as running:
        for pairs in args.pairs:
            if args.load == "compiled":
                level = measure_compiled(running, pairs, args.seconds)
            else:
                level = run(measure(running.ws_url, running.pid, pairs, args.round_trips))
            results[f"pairs_{pairs}"] = level
    print_report("relay_roundtrip", RELAY_SETTINGS, results)


if __name__ == "__main__":
    main()
