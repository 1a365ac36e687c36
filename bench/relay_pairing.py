"""Pairing sessions per second through a real relay process.

One session is what a pairing does on the relay: the target opens a WebSocket and sends
``listen``, the controller opens one and sends ``connect``, both get ``peer_found``, four ``data``
frames go each way (alternating, ~200-character payloads like the real key exchange), the target
sends ``done``, both sockets close. Sessions run at a fixed concurrency (default: 10, then 200)
for a fixed time; the load client may be split over several processes.

    .venv/bin/python bench/relay_pairing.py [--concurrency 10 200] [--seconds 5] [--clients 1]
        [--load compiled|python] [--relay-src DIR]

The load comes from the compiled generator (``bench/loadgen/amesh_load.c``, built with ``cc``
for the run) unless ``--load python`` picks the picows client of ``relay_client.py``;
``--relay-src`` runs the relay of another checkout (its ``src`` directory). The relay runs
with default settings except ``AMESH_MAX_CONNECTIONS_PER_IP`` (all load comes from 127.0.0.1)
and a warning log level. Target: at least 2,500 sessions/s at concurrency 200 on one core.
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
    RelayProcess,
    cpu_seconds,
    parallel_cpu_cores,
    print_report,
    raise_fd_limit,
    relay,
    run_clients,
    session_figures,
)
from relay_loadgen import binary, run_load

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


def python_load(url: str, concurrency: int, seconds: float, clients: int) -> Outcome:
    """The picows client of ``relay_client.py`` in ``clients`` processes, as one outcome."""
    shares = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]
    # Each client gets its own block of codes, larger than anything it can have in flight.
    jobs = [(url, share, seconds, i * (1_000_000 // clients)) for i, share in enumerate(shares)]
    outcomes = run_clients(client_process, jobs)
    return Outcome(
        sorted(x for o in outcomes for x in o.latencies),
        [e for o in outcomes for e in o.errors],
        sum(o.cpu for o in outcomes),
    )


def run_level(
    running: RelayProcess, concurrency: int, seconds: float, clients: int, load: str
) -> dict[str, object]:
    capacity = parallel_cpu_cores()
    clock = CpuClock(*running.pids)
    clock.start()
    if load == "python":
        outcome = python_load(running.ws_url, concurrency, seconds, clients)
        relay_cpu, wall = clock.read()
        figures = session_figures(outcome.latencies, outcome.errors, wall)
        client_cpu = outcome.cpu
    else:
        result = run_load("pairing", [running.port], concurrency, seconds, processes=clients)
        relay_cpu, wall = clock.read()
        figures = result.session_figures()
        client_cpu = result.cpu_s
    sessions = max(1, int(figures["sessions"]))
    return {
        "concurrency": concurrency,
        "load": load,
        "client_processes": clients,
        "parallel_cpu_cores_before": capacity,
        **figures,
        "relay_cpu_s": round(sum(relay_cpu), 2),
        "relay_cpu_pct": round(100 * sum(relay_cpu) / wall, 1),
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
        "relay_cpu_ms_per_session": round(1000 * sum(relay_cpu) / sessions, 3),
        "client_cpu_ms_per_session": round(1000 * client_cpu / sessions, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=1, help="load-client processes")
    parser.add_argument("--load", choices=("compiled", "python"), default="compiled")
    parser.add_argument("--relay-src", help="the src directory of the relay to measure")
    args = parser.parse_args()
    raise_fd_limit(4 * max(args.concurrency) + 1024)
    if args.load == "compiled":
        binary()  # built before any clock starts
    results = {}
    with relay(RELAY_SETTINGS, args.relay_src) as running:
        for concurrency in args.concurrency:
            level = run_level(running, concurrency, args.seconds, args.clients, args.load)
            results[f"concurrency_{concurrency}"] = level
        results["relay_health_after"] = running.health()
    print_report("relay_pairing", RELAY_SETTINGS, results)


if __name__ == "__main__":
    main()
