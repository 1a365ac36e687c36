"""Pairing sessions per second through a real relay process.

One session is what a pairing does on the relay: the target opens a WebSocket and sends
``listen``, the controller opens one and sends ``connect``, both get ``peer_found``, four ``data``
frames go each way (alternating, ~200-character payloads like the real key exchange), the target
sends ``done``, both sockets close. Sessions run at a fixed concurrency (default: 10, then 500)
for a fixed time; the load client may be split over several processes.

    .venv/bin/python bench/relay_pairing.py [--concurrency 10 500] [--seconds 10] [--clients 1]

The relay runs with default settings except ``AMESH_MAX_CONNECTIONS_PER_IP`` (all load comes
from 127.0.0.1) and a warning log level. Target on 2 cores: at least 2,000 sessions/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from dataclasses import dataclass

from relay_client import Client, run
from relay_harness import (
    CpuClock,
    cpu_seconds,
    parallel_cpu_cores,
    print_report,
    raise_fd_limit,
    relay,
    run_clients,
    session_figures,
)

# All load comes from 127.0.0.1: lift the per-address caps (connections, codes opened).
RELAY_SETTINGS = {"AMESH_MAX_CONNECTIONS_PER_IP": "100000", "AMESH_LISTEN_LIMIT": "1000000000"}
PAYLOAD = "A" * 200
DATA_FRAMES_EACH_WAY = 4


async def one_session(url: str, otc: str, controller_url: str | None = None) -> None:
    """One pairing; the controller joins through ``controller_url`` when given (another
    relay instance)."""
    target = await Client.open(url)
    try:
        target.send(json.dumps({"type": "listen", "otc": otc}))
        await target.expect("ack")
        controller = await Client.open(controller_url or url)
        try:
            controller.send(json.dumps({"type": "connect", "otc": otc}))
            await target.expect("peer_found")
            await controller.expect("peer_found")
            data = json.dumps({"type": "data", "payload": PAYLOAD})
            for _ in range(DATA_FRAMES_EACH_WAY):
                target.send(data)
                await controller.expect("data")
                controller.send(data)
                await target.expect("data")
            target.send(json.dumps({"type": "done"}))
            await controller.expect("done")
        finally:
            await controller.close()
    finally:
        await target.close()


@dataclass
class Outcome:
    """What one load-client process saw: session latencies, errors, its own CPU seconds."""

    latencies: list[float]
    errors: list[str]
    cpu: float


async def drive(url: str, concurrency: int, seconds: float, otc_base: int) -> Outcome:
    """Keep ``concurrency`` sessions in flight for ``seconds``."""
    latencies: list[float] = []
    errors: list[str] = []
    codes = itertools.count()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            # Codes are unique among the sessions in flight: at most `concurrency` per client.
            otc = f"{(otc_base + next(codes)) % 1_000_000:06d}"
            started = time.perf_counter()
            try:
                await one_session(url, otc)
            except Exception as error:
                errors.append(type(error).__name__ + ": " + str(error)[:120])
                continue
            latencies.append(time.perf_counter() - started)

    cpu0 = cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Outcome(latencies, errors, cpu_seconds() - cpu0)


def client_process(url: str, concurrency: int, seconds: float, otc_base: int) -> Outcome:
    return run(drive(url, concurrency, seconds, otc_base))  # type: ignore[no-any-return]


def run_level(
    url: str, relay_pid: int, concurrency: int, seconds: float, clients: int
) -> dict[str, object]:
    shares = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]
    # Each client gets its own block of codes, larger than anything it can have in flight.
    jobs = [(url, share, seconds, i * (1_000_000 // clients)) for i, share in enumerate(shares)]
    capacity = parallel_cpu_cores()
    clock = CpuClock(relay_pid)
    clock.start()
    outcomes = run_clients(client_process, jobs)
    (relay_cpu,), wall = clock.read()
    latencies = sorted(x for o in outcomes for x in o.latencies)
    errors = [e for o in outcomes for e in o.errors]
    client_cpu = sum(o.cpu for o in outcomes)
    return {
        "concurrency": concurrency,
        "client_processes": clients,
        "parallel_cpu_cores_before": capacity,
        **session_figures(latencies, errors, wall),
        "relay_cpu_s": round(relay_cpu, 2),
        "relay_cpu_pct": round(100 * relay_cpu / wall, 1),
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
        "relay_cpu_ms_per_session": round(1000 * relay_cpu / max(1, len(latencies)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=1, help="load-client processes")
    args = parser.parse_args()
    raise_fd_limit(4 * max(args.concurrency) + 1024)
    results = {}
    with relay(RELAY_SETTINGS) as running:
        for concurrency in args.concurrency:
            level = run_level(running.ws_url, running.pid, concurrency, args.seconds, args.clients)
            results[f"concurrency_{concurrency}"] = level
        results["relay_health_after"] = running.health()
    print_report("relay_pairing", RELAY_SETTINGS, results)


if __name__ == "__main__":
    main()
