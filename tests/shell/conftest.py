"""Fixtures for the remote shell tests: a real relay process, paired homes, a running agent.

Everything is real: ``python -m authmesh.relay`` on 127.0.0.1, ``amesh agent start`` as a
subprocess, controllers driven through pexpect on a pseudo-terminal. Homes are created with
:func:`authmesh.store.create_identity` and paired by writing allow-list entries directly
(pairing itself is tested elsewhere). Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET
from tests.support.relayproc import RelayProcess, start_relay, wait_until
from tests.support.shell import (
    RELAY_ENV,
    AgentProcess,
    Homes,
    make_home,
    marked_processes,
    pair_device,
    registered_agents,
)


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amesh-shell-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def homes(scratch: Path) -> Homes:
    base = scratch / "homes"
    base.mkdir()
    target, target_id, target_key = make_home(base, "prod-box")
    controller, controller_id, controller_key = make_home(base, "laptop")
    ungranted, ungranted_id, ungranted_key = make_home(base, "intern")
    peer, peer_id, peer_key = make_home(base, "other-box")
    pair_device(target, controller_id, controller_key, "laptop", ROLE_CONTROLLER, shell=True)
    pair_device(target, ungranted_id, ungranted_key, "intern", ROLE_CONTROLLER, shell=False)
    pair_device(target, peer_id, peer_key, "other-box", ROLE_TARGET, shell=False)
    for home in (controller, ungranted, peer):
        pair_device(home, target_id, target_key, "prod-box", ROLE_TARGET, shell=False)
    return Homes(target, controller, ungranted, peer, target_id, controller_id)


@pytest.fixture(scope="session")
def session_relay() -> Iterator[RelayProcess]:
    """One relay for the session; a test may stop it and ``start()`` it again (same port)."""
    process = start_relay(RELAY_ENV)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def agent(homes: Homes, session_relay: RelayProcess, scratch: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(homes.target, session_relay, scratch, "agent")
    process.wait_for("Registered with relay")
    yield process
    process.stop()


@pytest.fixture
def healthy_agent(agent: AgentProcess, session_relay: RelayProcess) -> Iterator[AgentProcess]:
    """The agent, registered; after the test no shell process of it may remain."""
    wait_until(lambda: registered_agents(session_relay) >= 1, 20, "the agent to be registered")
    yield agent
    wait_until(lambda: not marked_processes(), 10, "every remote test process to be gone")
    assert agent.process.poll() is None, "the agent died"
