"""Starting a software TPM (swtpm) on a free pair of ports."""

from __future__ import annotations

import socket
import subprocess
import time

_STARTUP_DEADLINE_SECONDS = 10.0


def free_port_pair() -> int:
    """A port P with P and P+1 both free (swtpm's server and control channels)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return int(port)
    raise RuntimeError("no free port pair for swtpm")


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"swtpm exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"swtpm did not listen on port {port} within {_STARTUP_DEADLINE_SECONDS}s")
