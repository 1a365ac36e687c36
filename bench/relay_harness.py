"""Shared parts of the relay benchmarks: the relay process, CPU/RSS readings, the machine.

Every benchmark starts its own relay (``python -m authmesh.relay`` with ``PORT=0``; the bound
port is read from its first start-up line), measures it from outside through ``/proc`` (psutil
is not a dependency), and prints the machine it ran on next to the figures.
"""

from __future__ import annotations

import asyncio
import functools
import json
import multiprocessing
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection

__all__ = [
    "FRAME_TIMEOUT_S",
    "CpuClock",
    "RelayProcess",
    "cpu_seconds",
    "expect",
    "machine",
    "parallel_cpu_cores",
    "percentile",
    "print_report",
    "raise_fd_limit",
    "relay",
    "rss_bytes",
    "run_clients",
    "session_figures",
]

_T = TypeVar("_T")
START_DEADLINE_S = 20.0
FRAME_TIMEOUT_S = 10.0
STOP_DEADLINE_S = 10.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_LISTENING = re.compile(r"listening on ws://\S+?:(\d+)/ws")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; the fields after its ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from ``/proc/<pid>/statm``."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES


class CpuClock:
    """CPU seconds a set of processes used since :meth:`start`, next to wall-clock seconds."""

    def __init__(self, *pids: int | str) -> None:
        self.pids = pids
        self._cpu0: list[float] = []
        self._wall0 = 0.0

    def start(self) -> None:
        self._cpu0 = [cpu_seconds(pid) for pid in self.pids]
        self._wall0 = time.perf_counter()

    def read(self) -> tuple[list[float], float]:
        """(CPU seconds per process, wall seconds) since :meth:`start`."""
        used = [cpu_seconds(pid) - c0 for pid, c0 in zip(self.pids, self._cpu0, strict=True)]
        return used, time.perf_counter() - self._wall0


@dataclass
class RelayProcess:
    """A running relay: its process id, bound port and URLs."""

    pid: int
    port: int

    @property
    def pids(self) -> list[int]:
        """The relay's process and its workers (``AMESH_WORKERS``), whose CPU is the relay's."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *map(int, children)]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/health"
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))

    def metric(self, name: str) -> float:
        """One unlabelled sample from ``/metrics``."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise LookupError(f"/metrics has no sample {name}")


@contextmanager
def relay(settings: Mapping[str, str], source: str | None = None) -> Iterator[RelayProcess]:
    """Run ``python -m authmesh.relay`` on 127.0.0.1 with ``settings`` added to the env;
    ``source``: the ``src`` directory of another checkout to run instead of this one (the
    "before" of a before/after comparison)."""
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": "0", "AMESH_LOG_LEVEL": "warning"}
    env.update(settings)
    if source is not None:
        env["PYTHONPATH"] = source
    process = subprocess.Popen(
        [sys.executable, "-m", "authmesh.relay"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = _LISTENING.search(first_line)
        if match is None:
            raise RuntimeError(f"the relay did not start (said {first_line!r})")
        running = RelayProcess(process.pid, int(match.group(1)))
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                if running.health()["status"] == "ok":
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-file limit (inherited by the relay) to at least ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, PermissionError):
            raise SystemExit(
                f"need {needed} open files but the hard limit is {hard}; "
                f"run `ulimit -Hn {needed}` as root first."
            ) from None
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(fraction * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def expect(ws: ClientConnection, frame_type: str) -> None:
    """Receive one frame of ``frame_type`` within ``FRAME_TIMEOUT_S``, else raise."""
    frame = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT_S))
    if frame.get("type") != frame_type:
        raise RuntimeError(f"expected {frame_type}, relay sent {frame}")


def run_clients(client: Callable[..., _T], jobs: Sequence[tuple[Any, ...]]) -> list[_T]:
    """``client(*job)`` for every job: in this process for one job, else one process each."""
    if len(jobs) == 1:
        return [client(*jobs[0])]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        return pool.starmap(client, jobs)


def session_figures(latencies: list[float], errors: list[str], wall: float) -> dict[str, Any]:
    """Count, errors, rate and latency percentiles of timed sessions (``latencies`` sorted)."""
    return {
        "sessions": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_s": round(wall, 2),
        "sessions_per_s": round(len(latencies) / wall, 1),
        "session_ms_p50": round(percentile(latencies, 0.50) * 1000, 2),
        "session_ms_p99": round(percentile(latencies, 0.99) * 1000, 2),
    }


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def parallel_cpu_cores(seconds: float = 1.0) -> float:
    """CPU capacity two busy processes actually get (2.0 on two idle, unshared cores).

    Virtual machines can advertise two CPUs yet deliver less when both are busy; the relay and
    the load client compete for exactly that capacity.
    """
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            _spin(seconds)
            os._exit(0)
        children.append(pid)
    used = 0.0
    for pid in children:
        _, _, usage = os.wait4(pid, 0)
        used += usage.ru_utime + usage.ru_stime
    return round(used / seconds, 2)


@functools.cache
def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "parallel_cpu_cores": parallel_cpu_cores(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": metadata.version("websockets"),
    }


def print_report(title: str, settings: Mapping[str, str], results: Mapping[str, Any]) -> None:
    """Human-readable lines, then the same data as one JSON line for docs/benchmarks.md."""
    print(f"== {title}")
    for key, value in machine().items():
        print(f"machine.{key}: {value}")
    for key, value in settings.items():
        print(f"relay env {key}={value}")
    for key, value in results.items():
        print(f"{key}: {value}")
    print(json.dumps({"benchmark": title, "machine": machine(), "relay_env": settings, **results}))
