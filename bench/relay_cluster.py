"""Pairing sessions per second through a relay cluster (instances sharing one Redis).

One session is the pairing of ``relay_pairing.py`` (listen, connect, ``peer_found`` both ways,
four ~200-character ``data`` frames each way, ``done``), except that the target and the
controller use different instances: with N instances the target of session i connects to
instance i mod N and its controller to instance (i + 1) mod N, so with two or more instances
every session crosses Redis (``--same-instance``: both peers of session i on instance i mod N,
so sessions spread over the instances without crossing). The clients pick instances round
robin themselves (no nginx in front), so the figures are the relays' and Redis's, not a
proxy's.

Rows: ``embedded`` is one instance without ``AMESH_REDIS_URL`` (state in memory, the
baseline); ``redis xN`` are N instances with it. The relay CPU per session (from
``/proc/<pid>/stat``, summed over instances) against the embedded row is the cost of the
Redis path; Redis's own CPU is shown apart.

Rows ``workers xN`` are one ``amesh-relay`` with ``AMESH_WORKERS=N`` (N processes on one port,
SO_REUSEPORT, sharing the Redis): the kernel picks each socket's worker, so about half the
sessions cross with two workers; its CPU is the supervisor's and the workers'.

    .venv/bin/python bench/relay_cluster.py [--instances 1 2 3] [--workers 2]
        [--seconds 3] [--concurrency 50] [--clients 1] [--same-instance]
        [--load compiled|python] [--sessions 2000] [--relay-src DIR]

The load comes from the compiled generator (``bench/loadgen/amesh_load.c``) for ``--seconds``
per row, or with ``--load python`` from ``relay_client.py`` for ``--sessions`` per row.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from relay_client import run
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
from relay_pairing import RELAY_SETTINGS, Outcome, one_session

CLUSTER_SETTINGS = RELAY_SETTINGS
REDIS_START_DEADLINE_S = 10.0


@contextmanager
def redis_server() -> Iterator[tuple[int, int]]:
    """A private redis-server on a free loopback port, without persistence: (pid, port)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; run scripts/install-system-deps")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + REDIS_START_DEADLINE_S
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as ping:
                        ping.sendall(b"PING\r\n")
                        if ping.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield process.pid, port
        finally:
            process.terminate()
            process.wait(10)


async def drive(
    urls: Sequence[str], numbers: range, concurrency: int, cross: bool = True
) -> Outcome:
    """Run the sessions numbered ``numbers``, ``concurrency`` at a time; with ``cross`` the
    controller uses the instance after its target's."""
    latencies: list[float] = []
    errors: list[str] = []
    pending = iter(numbers)

    async def worker() -> None:
        for number in pending:
            target_url = urls[number % len(urls)]
            controller_url = urls[(number + cross) % len(urls)]
            started = time.perf_counter()
            try:
                await one_session(target_url, f"{number % 1_000_000:06d}", controller_url)
            except Exception as error:
                errors.append(type(error).__name__ + ": " + str(error)[:120])
                continue
            latencies.append(time.perf_counter() - started)

    cpu0 = cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Outcome(latencies, errors, cpu_seconds() - cpu0)


def client_process(urls: Sequence[str], numbers: range, concurrency: int, cross: bool) -> Outcome:
    return run(drive(urls, numbers, concurrency, cross))  # type: ignore[no-any-return]


def python_load(urls: Sequence[str], args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """``args.sessions`` pairings over ``urls`` from ``relay_client.py``: figures, CPU."""
    # Each client process gets its own block of session numbers (hence of codes).
    blocks = [range(i, args.sessions, args.clients) for i in range(args.clients)]
    shares = [max(1, args.concurrency // args.clients)] * args.clients
    jobs = list(
        zip(itertools.repeat(urls), blocks, shares, itertools.repeat(args.cross), strict=False)
    )
    started = time.perf_counter()
    outcomes = run_clients(client_process, jobs)
    latencies = sorted(x for o in outcomes for x in o.latencies)
    errors = [e for o in outcomes for e in o.errors]
    figures = session_figures(latencies, errors, time.perf_counter() - started)
    return figures, sum(o.cpu for o in outcomes)


def run_row(
    running: Sequence[RelayProcess], redis_pid: int | None, args: argparse.Namespace
) -> dict[str, object]:
    """Pairings over the relays ``running``; the relay and Redis CPU they cost."""
    relay_pids = [pid for r in running for pid in r.pids]
    capacity = parallel_cpu_cores()
    clock = CpuClock(*relay_pids, *([redis_pid] if redis_pid is not None else []))
    clock.start()
    if args.load == "python":
        figures, client_cpu = python_load([r.ws_url for r in running], args)
    else:
        ports = [r.port for r in running]
        result = run_load(
            "pairing",
            ports,
            args.concurrency,
            args.seconds,
            processes=args.clients,
            cross=args.cross,
        )
        figures, client_cpu = result.session_figures(), result.cpu_s
    cpu, _ = clock.read()
    relay_cpu = sum(cpu[: len(relay_pids)])
    done = max(1, int(figures["sessions"]))
    return {
        "relay_processes": len(relay_pids),
        "parallel_cpu_cores_before": capacity,
        **figures,
        "relay_cpu_s": round(relay_cpu, 2),
        "relay_cpu_ms_per_session": round(1000 * relay_cpu / done, 3),
        "redis_cpu_ms_per_session": round(1000 * sum(cpu[len(relay_pids) :]) / done, 3),
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_ms_per_session": round(1000 * client_cpu / done, 3),
    }


def measure(
    instances: int,
    redis: tuple[int, int] | None,
    args: argparse.Namespace,
    db: int,
    workers: int = 1,
) -> dict[str, object]:
    """A row: ``instances`` relays (each with ``workers`` processes), Redis database ``db``."""
    settings = dict(CLUSTER_SETTINGS)
    if redis is not None:
        settings["AMESH_REDIS_URL"] = f"redis://127.0.0.1:{redis[1]}/{db}"
    if workers > 1:
        settings["AMESH_WORKERS"] = str(workers)
    with ExitStack() as stack:
        running = [stack.enter_context(relay(settings, args.relay_src)) for _ in range(instances)]
        row = run_row(running, redis[0] if redis is not None else None, args)
        row["health_after"] = [r.health()["status"] for r in running]
    return row


def print_table(rows: dict[str, dict[str, object]]) -> None:
    columns = (
        "sessions_per_s",
        "session_ms_p50",
        "session_ms_p99",
        "relay_cpu_ms_per_session",
        "relay_cpu_extra_ms",
        "redis_cpu_ms_per_session",
        "client_cpu_ms_per_session",
        "errors",
    )
    print(f"{'row':<12}" + "".join(f"{c:>{len(c) + 2}}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<12}" + "".join(f"{row[c]!s:>{len(c) + 2}}" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="AMESH_WORKERS rows")
    parser.add_argument("--seconds", type=float, default=3.0, help="per row (compiled)")
    parser.add_argument("--sessions", type=int, default=2000, help="per row (python)")
    parser.add_argument("--load", choices=("compiled", "python"), default="compiled")
    parser.add_argument("--relay-src", help="the src directory of the relay to measure")
    parser.add_argument("--concurrency", type=int, default=50, help="sessions in flight")
    parser.add_argument("--clients", type=int, default=1, help="load-client processes")
    parser.add_argument(
        "--same-instance",
        dest="cross",
        action="store_false",
        help="both peers of a session on one instance (sessions spread, none crossing)",
    )
    args = parser.parse_args()
    raise_fd_limit(4 * args.concurrency + 1024)
    if args.load == "compiled":
        binary()  # built before any clock starts
    rows = {"embedded": measure(1, None, args, 0)}
    with redis_server() as redis:
        # A fresh database per row: no routing keys left over from the previous one.
        databases = itertools.count(1)
        for instances in args.instances:
            rows[f"redis x{instances}"] = measure(instances, redis, args, next(databases))
        for workers in args.workers:
            rows[f"workers x{workers}"] = measure(1, redis, args, next(databases), workers)
    embedded_cpu = float(str(rows["embedded"]["relay_cpu_ms_per_session"]))
    for row in rows.values():
        cpu = float(str(row["relay_cpu_ms_per_session"]))
        row["relay_cpu_extra_ms"] = round(cpu - embedded_cpu, 3)
    print_table(rows)
    settings = {**CLUSTER_SETTINGS, "AMESH_REDIS_URL": "redis://127.0.0.1:<port>/<row>"}
    results = {"concurrency": args.concurrency, "crossing": args.cross, **rows}
    print_report("relay_cluster", settings, results)


if __name__ == "__main__":
    main()
