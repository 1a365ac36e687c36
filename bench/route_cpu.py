"""Guarded against unguarded routes of one server process: rate and CPU per request.

Shared by ``bench/sdk_aiohttp.py`` and ``bench/sdk_grpc.py``. One server process serves
both routes; load phases on each alternate (the box is shared, so medians of several
rounds are reported). Each phase records the server's CPU from ``/proc`` and the load
generator's CPU (``time.process_time`` of this process, all its threads) per answered
request: the server's figure is what authmesh adds, the generator's shows it was not the
bottleneck.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from authmesh.core._keys import PrivateKey
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._verifier import Verifier
from authmesh.store import AllowListStore
from relay_harness import cpu_seconds, machine
from sdk_cpu import ecdsa_microseconds, verifier_microseconds
from sdk_verify import make_home

__all__ = [
    "Phase",
    "alternate",
    "best_of",
    "compare_routes",
    "parse_arguments",
    "print_floor",
    "print_machine",
    "print_phases",
    "run_servers",
    "server_process",
]


@dataclass(frozen=True)
class Phase:
    rate: float
    """Successful answers per second."""
    failures: int
    server_us: float
    """Server CPU per successful answer."""
    client_us: float
    """Load-generator CPU per successful answer."""


Run = Callable[[], tuple[int, int]]
"""One load phase: returns (successful answers, failed answers)."""


def _measure(server_pid: int, run: Run) -> Phase:
    server_before, client_before = cpu_seconds(server_pid), time.process_time()
    started = time.monotonic()
    done, failures = run()
    elapsed = time.monotonic() - started
    server = cpu_seconds(server_pid) - server_before
    client = time.process_time() - client_before
    done = max(done, 1)
    return Phase(done / elapsed, failures, server / done * 1e6, client / done * 1e6)


def alternate(
    server_pid: int, phases: Mapping[str, Callable[[], Run]], rounds: int
) -> dict[str, list[Phase]]:
    """Run every phase once per round, in turn.

    Each phase is a factory that prepares its load (signing, unmeasured) and returns the
    :data:`Run` that is measured.
    """
    results: dict[str, list[Phase]] = {name: [] for name in phases}
    for _ in range(rounds):
        for name, prepare in phases.items():
            results[name].append(_measure(server_pid, prepare()))
    return results


def print_phases(title: str, results: Mapping[str, list[Phase]]) -> None:
    """Medians per phase, and the server CPU each adds over the first (the baseline)."""
    print(f"== {title}")
    baseline = next(iter(results))
    base_cpu = statistics.median(phase.server_us for phase in results[baseline])
    for name, phases in results.items():
        rate = statistics.median(phase.rate for phase in phases)
        server = statistics.median(phase.server_us for phase in phases)
        client = statistics.median(phase.client_us for phase in phases)
        failures = sum(phase.failures for phase in phases)
        added = "" if name == baseline else f"  added {server - base_cpu:+.0f} us"
        print(
            f"  {name:<28} {rate:7.0f} req/s  server CPU {server:5.0f} us/req{added}  "
            f"load CPU {client:4.0f} us/req  failures {failures}  "
            f"runs {[round(phase.rate) for phase in phases]}"
        )


def print_machine() -> None:
    info = machine()
    print(
        f"cpu: {info['cpu']}, usable {info['cpus_usable']}, "
        f"parallel cores measured {info['parallel_cpu_cores']}, python {info['python']}"
    )


def best_of(measure: Callable[[], float], rounds: int = 3) -> float:
    """The least disturbed of ``rounds`` in-process measurements."""
    return min(measure() for _ in range(rounds))


def print_floor(store: AllowListStore, key: PrivateKey, count: int = 3000) -> None:
    """In this run, in process: one P-256 verification and one ``Verifier.verify``."""

    def verifier() -> Verifier:
        return Verifier(store, nonce_store=InMemoryNonceStore())

    ecdsa = best_of(lambda: ecdsa_microseconds(key, count))
    verify = best_of(lambda: verifier_microseconds(verifier, key, count))
    print(f"in process: ECDSA P-256 verify {ecdsa:.1f} us, Verifier.verify {verify:.1f} us")


def parse_arguments(description: str, rate: int, paced: str | None = None) -> argparse.Namespace:
    """The common options; ``paced``: the help of a ``--paced`` option, if the script has one."""
    parser = argparse.ArgumentParser(description=description)
    if paced is not None:
        parser.add_argument("--paced", type=float, help=paced)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="connections or calls in flight"
    )
    parser.add_argument(
        "--rate", type=int, default=rate, help="most verified requests/s expected (pool size)"
    )
    return parser.parse_args()


@contextmanager
def server_process(script: str, *argv: str) -> Iterator[tuple[int, int]]:
    """Run ``python -c script *argv``; yield (pid, port) once it has printed its port."""
    server = subprocess.Popen(
        [sys.executable, "-c", script, *argv], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline()
        if not port.strip().isdigit():
            raise SystemExit("the server did not start; its error is printed above")
        yield server.pid, int(port)
    finally:
        server.terminate()
        server.wait(10)


def compare_routes(
    server_pid: int,
    prepare: Callable[[str, int], Run],
    routes: tuple[str, str],
    args: argparse.Namespace,
) -> dict[str, list[Phase]]:
    """Warm up, then alternate the exempt and the guarded route of ``routes``.

    ``prepare(route, count)`` signs ``count`` requests: a pool sized for the guarded
    route, reused on the exempt one.
    """
    open_route, guarded_route = routes
    prepare(open_route, 100)()
    pool = round(args.seconds * args.rate)
    return alternate(
        server_pid,
        {
            f"{open_route} (exempt)": lambda: prepare(open_route, 1000),
            guarded_route: lambda: prepare(guarded_route, pool),
        },
        args.rounds,
    )


def run_servers(
    key: PrivateKey,
    in_process: Callable[[AllowListStore, PrivateKey], None],
    kinds: tuple[str, ...],
    measure: Callable[[str, str], None],
) -> None:
    """The machine, the in-process figures, then ``measure(kind, home)`` for each server."""
    print_machine()
    with tempfile.TemporaryDirectory() as home:
        in_process(make_home(Path(home), key), key)
        for kind in kinds:
            measure(kind, home)
