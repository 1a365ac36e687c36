"""A relay, a protocol-2 agent on a fresh box and a controller granted a shell on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET
from authmesh.store import AmeshHome, load_context
from tests.hostile.agent_campaign import AgentTarget
from tests.support.relayproc import RelayProcess, start_relay
from tests.support.shell import AgentProcess, make_home, pair_device

__all__ = ["AgentUnderAttack", "agent_under_attack"]

TARGET_NAME = "fuzzed-box"
# The campaign sends every request from loopback; the relay's limiters are tested elsewhere.
_RELAY_ENV = {
    "AMESH_SHELL_FAILURE_LIMIT": "100000",
    "AMESH_SHELL_REQUEST_LIMIT": "100000",
    "AMESH_AGENT_FAILURE_LIMIT": "100000",
}


@dataclass(frozen=True)
class AgentUnderAttack:
    relay: RelayProcess
    agent: AgentProcess
    target: AgentTarget
    controller_home: Path
    scratch: Path


@contextmanager
def agent_under_attack(scratch: Path) -> Iterator[AgentUnderAttack]:
    """Everything started in ``scratch`` and stopped afterwards."""
    box, box_id, box_key = make_home(scratch, TARGET_NAME)
    laptop, laptop_id, laptop_key = make_home(scratch, "laptop")
    pair_device(box, laptop_id, laptop_key, "laptop", ROLE_CONTROLLER, True)
    pair_device(laptop, box_id, box_key, TARGET_NAME, ROLE_TARGET, False)
    relay = start_relay(_RELAY_ENV)
    agent = AgentProcess(box, relay, scratch, "fuzzed-agent")
    try:
        agent.wait_for("Registered with relay (identity verified, protocol 2)", timeout=30)
        controller = load_context(home=AmeshHome(laptop), environ={})
        target = AgentTarget(relay.url, box_id, box_key, controller, TARGET_NAME)
        yield AgentUnderAttack(relay, agent, target, laptop, scratch)
    finally:
        agent.stop()
        relay.stop()
