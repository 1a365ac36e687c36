"""Real relay processes for the tests: start, wait until ready, probe, stop.

A relay is ``python -m authmesh.relay`` (or another relay command, such as an image's entry
point) on 127.0.0.1. With ``PORT=0`` the OS picks a free port, so there is no race: the bound
port is read from the relay's first stdout line, then ``GET /health`` must answer 200. Every
wait has a deadline. The shared fixtures ``relay`` and ``relay_factory`` live in
``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "RELAY_COMMAND",
    "START_DEADLINE_S",
    "RelayProcess",
    "free_port",
    "free_ports",
    "read_metrics",
    "relay_env",
    "start_relay",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[2]
RELAY_COMMAND = (sys.executable, "-m", "authmesh.relay")
START_DEADLINE_S = 15.0
STOP_DEADLINE_S = 10.0
# The relay prints two start-up lines; anything beyond this is not kept (bounded memory).
MAX_STDOUT_LINES = 100
_LISTENING = re.compile(r"listening on ws://[^:]+:(\d+)/ws")


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


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
    """A TCP port that was free on 127.0.0.1 a moment ago (for a URL nobody answers at)."""
    return free_ports(1)[0]


def relay_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without relay settings, plus loopback, ``PORT=0``,
    quiet logs and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMESH_") and k != "PORT"}
    env.update({"HOST": "127.0.0.1", "PORT": "0", "AMESH_LOG_LEVEL": "warning"})
    env.update(extra or {})
    return env


def read_metrics(port: int) -> dict[str, float]:
    """The ``/metrics`` samples of the relay on ``port`` as ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        body = response.read().decode()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


class RelayProcess:
    """One relay; :meth:`start` may be called again after :meth:`stop` to restart it on the
    port it had (clients configured with :attr:`url` reconnect to the same place)."""

    def __init__(
        self, env: Mapping[str, str], command: Sequence[str] = RELAY_COMMAND, cwd: Path = REPO
    ) -> None:
        self.env = dict(env)
        self.command = list(command)
        self.cwd = cwd
        self.port = 0
        self.stdout_lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._stderr_text = ""
        self.terminated = False

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "the relay was never started"
        return self._proc

    def start(self) -> RelayProcess:
        """Launch the relay and wait until it is ready (see :meth:`wait_ready`)."""
        env = dict(self.env)
        if self.port:
            env["PORT"] = str(self.port)
        self.stdout_lines = []
        self.terminated = False
        # stderr goes to a file: nobody reads it while the relay runs, and a full pipe would
        # block the relay; it is attached to failure messages.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  # lives as long as the relay
        self._proc = subprocess.Popen(
            self.command,
            env=env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        threading.Thread(target=self._read_stdout, args=(self._proc,), daemon=True).start()
        try:
            return self.wait_ready()
        except AssertionError:
            self.kill()
            raise

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        # Always drained, so the relay never blocks on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(self.stdout_lines) < MAX_STDOUT_LINES:
                self.stdout_lines.append(line.decode(errors="replace").rstrip("\n"))

    def wait_ready(self) -> RelayProcess:
        """Wait for the port line and a 200 from ``/health``, failing after the deadline."""
        deadline = time.monotonic() + START_DEADLINE_S

        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the relay exited at start-up: {self.stderr_text()}")
            return bool(self.stdout_lines)

        wait_until(started, START_DEADLINE_S, "the relay's start-up line")
        match = _LISTENING.search(self.stdout_lines[0])
        assert match, f"the relay did not report its port: {self.stdout_lines}"
        self.port = int(match.group(1))
        remaining = max(deadline - time.monotonic(), 0.1)
        wait_until(lambda: started() and self.health() is not None, remaining, "relay /health")
        return self

    def health(self) -> dict[str, Any] | None:
        """The parsed ``/health`` body, or None when the relay does not answer 200."""
        try:
            url = f"http://127.0.0.1:{self.port}/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        """``/metrics`` samples as ``{'name{labels}': value}``."""
        return read_metrics(self.port)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stderr_text(self) -> str:
        """What the relay wrote to stderr so far (kept after it stopped)."""
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.seek(0)
            self._stderr_text = self._stderr.read().decode(errors="replace")
        return self._stderr_text

    def terminate(self) -> None:
        """SIGTERM (once) without waiting; :meth:`stop` then only waits."""
        if self.proc.poll() is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, signal_number: int = signal.SIGTERM) -> int:
        """Signal the relay (SIGTERM: graceful shutdown), wait for it; its exit status."""
        if self.proc.poll() is None:
            if not (self.terminated and signal_number == signal.SIGTERM):
                self.proc.send_signal(signal_number)
            self.terminated = True
            try:
                self.proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._closed()

    def kill(self) -> int:
        """SIGKILL (an abrupt crash, no goodbye to clients); the exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_DEADLINE_S)
        return self._closed()

    def _closed(self) -> int:
        if self._stderr is not None:
            self.stderr_text()
            self._stderr.close()
        return self.proc.returncode


def start_relay(extra_env: Mapping[str, str] | None = None) -> RelayProcess:
    """A ready ``python -m authmesh.relay`` on a free loopback port with ``extra_env`` added."""
    return RelayProcess(relay_env(extra_env)).start()


RelayFactory = Callable[..., RelayProcess]
