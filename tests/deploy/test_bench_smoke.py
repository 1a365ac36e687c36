"""The relay benchmarks still run against the current relay (tiny sizes; figures not checked).

They talk to the relay through its public surface (start-up line, ``/health``, ``/metrics``,
the pairing messages), so a change there that would silently break ``bench/`` fails here.
They run side by side to keep the suite fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = {
    "relay_pairing": ["--concurrency", "2", "--seconds", "0.5"],
    "relay_roundtrip": ["--pairs", "1", "2", "--round-trips", "20"],
    "relay_idle_rss": ["--connections", "50"],
    "relay_cluster": ["--instances", "2", "--sessions", "20", "--concurrency", "2"],
}
DEADLINE_S = 90


def test_benchmarks_run() -> None:
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(REPO / "bench" / f"{name}.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in RUNS.items()
    }
    reports = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 0, f"{name} failed:\n{stderr}"
        reports[name] = json.loads(stdout.strip().splitlines()[-1])

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
