"""A real relay process per test, and fixed identities for the pairing tests."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from authmesh.core.keys import PrivateKey

START_DEADLINE = 15.0
_LISTENING = re.compile(r"listening on ws://[^:]+:(\d+)/ws")


@dataclass
class RelayProcess:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def start_relay(**env: str) -> RelayProcess:
    """``python -m authmesh.relay`` on 127.0.0.1 with an OS-chosen port; waits until it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "authmesh.relay"],
        env={**os.environ, "PORT": "0", "HOST": "127.0.0.1", "AMESH_LOG_LEVEL": "error", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            match = _LISTENING.search(process.stdout.readline())
            if match:
                return RelayProcess(process, int(match.group(1)))
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError("the relay did not start listening in time")


@pytest.fixture
def relay() -> Iterator[RelayProcess]:
    """A relay process of its own for each test (tests may kill it)."""
    process = start_relay()
    yield process
    process.kill()


@pytest.fixture
def target_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def controller_key() -> PrivateKey:
    return PrivateKey.generate()
