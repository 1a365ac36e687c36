"""An agent registered as the reference agent (``--protocol 1``): sessions on its registration
socket, one at a time — how every session runs through a reference relay.

Same real relay process; the relay keeps protocol-1 agents on the reference behaviour except
that it never re-binds a busy agent (spec shell S3).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmesh.cli._exit_codes import ExitCode
from tests.support.relayproc import RelayProcess, wait_until
from tests.support.shell import (
    MARKER,
    AgentProcess,
    Homes,
    box_agent,
    exit_status,
    marked_processes,
    run_shell,
    spawn_shell,
    type_line,
)

TARGET = "legacy-box"


@pytest.fixture(scope="module")
def legacy_agent(
    homes: Homes, session_relay: RelayProcess, scratch: Path
) -> Iterator[AgentProcess]:
    registered = "Registered with relay (identity verified, legacy relay)"
    with box_agent(
        homes, session_relay, scratch, TARGET, "--protocol", "1", registered=registered
    ) as agent:
        yield agent


@pytest.fixture
def legacy(legacy_agent: AgentProcess) -> Iterator[AgentProcess]:
    yield legacy_agent
    wait_until(lambda: not marked_processes(), 10, "every remote test process to be gone")
    assert legacy_agent.process.poll() is None, "the agent died"


def _command(homes: Homes, relay: RelayProcess, scratch: Path, *args: str) -> tuple[int, str]:
    result = run_shell(homes.controller, relay, scratch, *args, target=TARGET)
    return result.returncode, (result.stdout + result.stderr).replace("\r\n", "\n")


def test_interactive_and_command_sessions_with_exit_codes(
    homes: Homes, session_relay: RelayProcess, legacy: AgentProcess, scratch: Path
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch, target=TARGET, rows=33, cols=90)
    type_line(child, "stty size", "33 90")
    child.send("exit 42\r")
    assert exit_status(child) == 42
    assert _command(homes, session_relay, scratch, "-c", "echo legacy-$((2*3)); exit 3") == (
        3,
        "legacy-6\n",
    )


def test_controller_killed_mid_session_frees_the_only_slot(
    homes: Homes, session_relay: RelayProcess, legacy: AgentProcess, scratch: Path
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch, target=TARGET)
    type_line(child, f"sleep {MARKER}5 & echo L$((4+4))L", "L8L")
    wait_until(lambda: len(marked_processes()) == 1, 10, "the background sleep to start")
    os.kill(child.pid, signal.SIGKILL)
    child.close(force=True)
    wait_until(lambda: not marked_processes(), 10, "the killed controller's shell to be ended")
    status, output = _command(homes, session_relay, scratch, "-c", "echo free")
    assert (status, output) == (0, "free\n")


def test_a_second_request_cannot_divert_the_live_session(
    homes: Homes, session_relay: RelayProcess, legacy: AgentProcess, scratch: Path
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch, target=TARGET)
    type_line(child, "echo D$((5+6))D", "D11D")
    status, output = _command(homes, session_relay, scratch, "--timeout", "1", "-c", "id")
    assert status == ExitCode.TIMED_OUT and "did not answer" in " ".join(
        output.replace("›", " ").split()
    )
    type_line(child, "echo D$((6+6))D", "D12D")
    child.send("exit\r")
    assert exit_status(child) == 0
