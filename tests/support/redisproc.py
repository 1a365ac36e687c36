"""A private redis-server for the tests: start, stop, and start again on the same port.

The server binds 127.0.0.1 on a port that was free a moment ago, keeps nothing on disk, and is
ready once it answers ``PING``; every wait has a deadline. The shared session fixture
``redis_server`` lives in ``tests/conftest.py``; tests that stop Redis make their own
:class:`RedisServer`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.support.relayproc import START_DEADLINE_S, STOP_DEADLINE_S, free_port, wait_until

__all__ = ["RedisServer"]

# A port that was free a moment ago may be taken before redis-server binds it.
_START_ATTEMPTS = 5


class RedisServer:
    """One redis-server; :meth:`start` after :meth:`stop` reopens the same port, so relays
    configured with :meth:`url` find it again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/install-system-deps")
        self.binary = binary
        self.directory = directory
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0, password: str | None = None) -> str:
        """``redis://[:password@]127.0.0.1:<port>/<db>``."""
        secret = f":{password}@" if password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Launch redis-server (on the previous port after a stop) and wait for ``PING``."""
        if self.port:
            if not self._launch(self.port):
                raise AssertionError(f"redis-server did not start again on port {self.port}")
            return self
        for _attempt in range(_START_ATTEMPTS):
            if self._launch(free_port()):
                return self
        raise AssertionError("redis-server did not start on a free port")

    def _launch(self, port: int) -> bool:
        self.port = port
        proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                # One database per test cluster keeps their keys apart.
                "--databases",
                "256",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._proc = proc
        # An exited process (port taken) also ends the wait; it is told apart right after.
        wait_until(
            lambda: proc.poll() is not None or self.ping(), START_DEADLINE_S, "redis-server PING"
        )
        return proc.poll() is None

    def ping(self) -> bool:
        """True when the server answers ``PING`` within a second."""
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after the deadline); the port stays this server's."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
