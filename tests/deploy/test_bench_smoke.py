"""The relay benchmarks still run against the current relay (tiny sizes; figures not checked).

They talk to the relay through its public surface (start-up line, ``/health``, ``/metrics``,
the pairing messages), so a change there that would silently break ``bench/`` fails here.
They run side by side to keep the suite fast.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# The Python load client: the compiled one needs a C compiler, which CI need not have.
RUNS = {
    "relay_pairing": ["--concurrency", "2", "--seconds", "0.5", "--load", "python"],
    "relay_roundtrip": ["--pairs", "1", "2", "--round-trips", "20", "--load", "python"],
    "relay_idle_rss": ["--connections", "50"],
    "relay_cluster": [
        *("--instances", "2", "--sessions", "20", "--concurrency", "2", "--load", "python"),
    ],
}
COMPILED_RUNS = {
    "relay_pairing": ["--concurrency", "2", "--seconds", "0.5"],
    "relay_roundtrip": ["--pairs", "2", "--seconds", "0.5"],
    "relay_cluster": ["--instances", "2", "--workers", "2", "--seconds", "0.5"],
}
DEADLINE_S = 90


def run_benchmarks(runs: dict[str, list[str]]) -> dict[str, Any]:
    """Every benchmark of ``runs`` side by side; the JSON report of each."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(REPO / "bench" / f"{name}.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in runs.items()
    }
    reports = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 0, f"{name} failed:\n{stderr}"
        reports[name] = json.loads(stdout.strip().splitlines()[-1])
    return reports


@pytest.mark.skipif(shutil.which("cc") is None, reason="the compiled load generator needs cc")
def test_compiled_load_generator_runs() -> None:
    reports = run_benchmarks(COMPILED_RUNS)
    pairing = reports["relay_pairing"]["concurrency_2"]
    assert pairing["sessions"] > 0
    assert pairing["errors"] == 0
    assert pairing["client_cpu_s"] > 0
    roundtrip = reports["relay_roundtrip"]["pairs_2"]
    assert roundtrip["round_trips"] > 0
    assert roundtrip["errors"] == 0
    for row in ("embedded", "redis x2", "workers x2"):
        assert reports["relay_cluster"][row]["sessions"] > 0
        assert reports["relay_cluster"][row]["errors"] == 0


def test_benchmarks_run() -> None:
    reports = run_benchmarks(RUNS)

    pairing = reports["relay_pairing"]["concurrency_2"]
    assert pairing["sessions"] > 0
    assert pairing["errors"] == 0
    for pairs in (1, 2):
        assert reports["relay_roundtrip"][f"pairs_{pairs}"]["round_trips"] == 20
    for row in ("embedded", "redis x2"):
        assert reports["relay_cluster"][row]["sessions"] == 20
        assert reports["relay_cluster"][row]["errors"] == 0
    idle = reports["relay_idle_rss"]
    assert idle["relay_counted"] == 50
    assert idle["health_while_open"]["status"] == "ok"
    for report in reports.values():
        assert report["machine"]["cpus_usable"] >= 1
