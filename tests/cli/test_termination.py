"""SIGTERM and SIGINT end a command waiting on the relay with status 130 and one line.

Each command is stopped while it waits: ``listen`` and ``provision`` for a peer on a real relay,
``invite`` and ``bootstrap`` for a relay that accepted the connection and never answers. No
traceback is printed and nothing is left half-written (no allow-list entry, no identity).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from authmesh.cli._exit_codes import ExitCode
from tests.cli.test_bootstrap_e2e import provision
from tests.support.cli import Device, unwrapped
from tests.support.relayproc import RelayProcess

SIGNALS = [signal.SIGTERM, signal.SIGINT]


class SilentRelay:
    """A TCP listener that accepts connections and never answers: a relay that hangs."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self._server.getsockname()[1]}/ws"
        self.connected = threading.Event()
        self._accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self._accepted.append(connection)
            self.connected.set()

    def close(self) -> None:
        self._server.close()
        for connection in self._accepted:
            connection.close()


@pytest.fixture
def silent_relay() -> Iterator[SilentRelay]:
    relay = SilentRelay()
    yield relay
    relay.close()


def interrupted(child: pexpect.spawn, signum: int) -> str:
    """Send ``signum``; the child must exit 130 after one line, without a traceback."""
    os.kill(child.pid, signum)
    child.expect(pexpect.EOF)
    output = unwrapped(child.before or b"")
    child.close()
    assert child.exitstatus == ExitCode.INTERRUPTED, (child.signalstatus, output)
    assert "Interrupted; nothing was changed by the step in progress." in output
    assert output.count("Error:") == 1, output
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize("signum", SIGNALS)
def test_listen_waiting_for_a_peer(
    signum: int, make_device: Callable[[str], Device], module_relay: RelayProcess
) -> None:
    device = make_device("Server")
    child = device.spawn("listen", relay=module_relay)
    child.expect(rb"Pairing code: \d{6}")
    interrupted(child, signum)
    assert device.entries() == []


@pytest.mark.parametrize("signum", SIGNALS)
def test_provision_waiting_for_the_target(
    signum: int,
    make_device: Callable[[str], Device],
    module_relay: RelayProcess,
    children: list[pexpect.spawn],
) -> None:
    controller = make_device("Controller")
    child, _ = provision(controller, module_relay, children)
    interrupted(child, signum)
    assert controller.entries() == []


@pytest.mark.parametrize("signum", SIGNALS)
def test_invite_waiting_on_the_relay(
    signum: int, make_device: Callable[[str], Device], silent_relay: SilentRelay
) -> None:
    device = make_device("Laptop")
    child = device.spawn("invite", "123456-1234-5678", relay=silent_relay.url)
    assert silent_relay.connected.wait(30)
    interrupted(child, signum)
    assert device.entries() == []


@pytest.mark.parametrize("signum", SIGNALS)
def test_bootstrap_waiting_on_the_relay(
    signum: int,
    make_device: Callable[[str], Device],
    module_relay: RelayProcess,
    homes: Callable[[], Path],
    children: list[pexpect.spawn],
    silent_relay: SilentRelay,
) -> None:
    watcher, token = provision(make_device("Controller"), module_relay, children)
    watcher.terminate(force=True)
    home = homes()
    target = Device(
        home=home,
        env={**make_device("Spare").env, "AUTH_MESH_DIR": str(home)},
        device_id="",
        name="",
    )
    # The token names the real relay; --relay sends bootstrap to the silent one.
    args = ("bootstrap", token, "--backend", "encrypted-file", "--relay", silent_relay.url)
    child = target.spawn(*args, relay=silent_relay.url)
    assert silent_relay.connected.wait(30)
    interrupted(child, signum)
    assert not (home / "identity.json").exists()
    # Only the store's lock file remains: no key, no temporary file.
    assert [path.name for path in home.rglob("*") if path.is_file()] == [".amesh.lock"]
