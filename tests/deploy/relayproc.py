"""Start a relay command as a real process and wait for its ``/health`` with a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["free_port", "free_ports", "get_health", "running", "wait_healthy"]

START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    return free_ports(1)[0]


def get_health(url: str, tls: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """Status code and parsed JSON body of one GET (status 0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=tls) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


def wait_healthy(
    url: str, alive: subprocess.Popen[bytes], tls: ssl.SSLContext | None = None
) -> bool:
    """Whether ``url`` answers 200 before the deadline while ``alive`` keeps running."""
    deadline = time.monotonic() + START_DEADLINE_S
    while get_health(url, tls)[0] != 200:
        if alive.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def running(
    argv: Sequence[str], env: Mapping[str, str], health_url: str, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends; ready once ``health_url`` answers 200.

    On exit the process gets SIGTERM and, if it outlives the deadline, SIGKILL. Its output is
    attached to the failure message if it dies or never becomes healthy.
    """
    # A file, not a pipe: nobody reads while the relay runs, and a full pipe would block it.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdout=log, stderr=log, start_new_session=True
        )
        try:
            if not wait_healthy(health_url, process):
                process.kill()
                process.wait()
                log.seek(0)
                output = log.read().decode(errors="replace")
                raise AssertionError(
                    f"{argv[0]} did not become healthy at {health_url} "
                    f"(exit code {process.returncode}); output:\n{output}"
                )
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_DEADLINE_S)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
