"""The compiled load generator, ``bench/loadgen/amesh_load.c``, seen from the benchmarks.

It is built once per benchmark run with ``cc -O2`` into a temporary directory (nothing else
needs it: not the tests, not CI) and run as one or more processes; each prints one JSON line
with its counts, latency percentiles and its own CPU seconds.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LoadResult", "binary", "run_load"]

SOURCE = Path(__file__).resolve().parent / "loadgen" / "amesh_load.c"
# A load process ends at most one session timeout (10 s) after its run; this bounds the wait.
_GRACE_S = 30.0


@dataclass
class LoadResult:
    """What the load processes saw, summed (latency percentiles: the worst process's)."""

    completed: int
    errors: int
    first_errors: list[str]
    wall_s: float
    cpu_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    def session_figures(self) -> dict[str, Any]:
        """The figures of ``relay_harness.session_figures``, from the load processes."""
        return {
            "sessions": self.completed,
            "errors": self.errors,
            "first_errors": self.first_errors,
            "wall_s": round(self.wall_s, 2),
            "sessions_per_s": round(self.completed / self.wall_s, 1),
            "session_ms_p50": round(self.p50_ms, 2),
            "session_ms_p99": round(self.p99_ms, 2),
        }


@functools.cache
def binary() -> Path:
    """Compile the load generator (once per run) and return the executable's path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("the compiled load generator needs a C compiler (cc); or --load python")
    directory = Path(tempfile.mkdtemp(prefix="amesh-load-"))
    atexit.register(shutil.rmtree, directory, True)
    executable = directory / "amesh_load"
    subprocess.run([compiler, "-O2", "-o", str(executable), str(SOURCE)], check=True)
    return executable


def run_load(
    mode: str,
    ports: Sequence[int],
    concurrency: int,
    seconds: float,
    *,
    processes: int = 1,
    cross: bool = True,
) -> LoadResult:
    """Run ``processes`` load generators side by side, ``concurrency`` split between them."""
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    commands = []
    for index, share in enumerate(shares):
        command = [str(binary()), mode, "--ports", ",".join(map(str, ports))]
        command += ["--concurrency", str(share), "--seconds", str(seconds)]
        # Each process gets its own block of codes, larger than anything it has in flight.
        command += ["--code-base", str(index * (1_000_000 // processes))]
        commands.append(command + ([] if cross else ["--same-instance"]))
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in commands]
    outputs = [json.loads(p.communicate(timeout=seconds + _GRACE_S)[0]) for p in running]
    return LoadResult(
        completed=sum(o["completed"] for o in outputs),
        errors=sum(o["errors"] for o in outputs),
        first_errors=[o["first_error"] for o in outputs if o["first_error"]],
        wall_s=max(o["wall_s"] for o in outputs),
        cpu_s=sum(o["cpu_s"] for o in outputs),
        p50_ms=max(o["p50_ms"] for o in outputs),
        p99_ms=max(o["p99_ms"] for o in outputs),
        max_ms=max(o["max_ms"] for o in outputs),
    )
