"""`amesh shell` exit statuses before the session starts, through the real CLI and real relays.

The table is docs/cli.md's: 3 refused by the agent (tested in test_shell_e2e.py), 4 no answer,
5 the relay refused the request (rate limited or any other relay error) or went away.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from authmesh.cli._exit_codes import ExitCode
from tests.support.relayproc import start_relay
from tests.support.shell import Homes, run_cli


def _shell(homes: Homes, scratch: Path, url: str, timeout: str) -> subprocess.CompletedProcess[str]:
    args = ("shell", "prod-box", "--relay", url, "--timeout", timeout, "-c", "id")
    return run_cli(homes.controller, scratch, *args)


def test_a_rate_limited_shell_request_is_exit_5(homes: Homes, scratch: Path) -> None:
    relay = start_relay({"AMESH_SHELL_REQUEST_LIMIT": "1"})
    try:
        _shell(homes, scratch, relay.url, timeout="2")  # uses up the one request a minute
        limited = _shell(homes, scratch, relay.url, timeout="2")
    finally:
        relay.stop()
    assert limited.returncode == ExitCode.RELAY, limited.stderr
    assert "rate_limited" in limited.stderr and "wait a minute" in limited.stderr
    assert "Traceback" not in limited.stderr


def test_no_agent_answering_is_exit_4(homes: Homes, scratch: Path) -> None:
    relay = start_relay()  # no agent registered: the relay answers peer_found all the same
    try:
        result = _shell(homes, scratch, relay.url, timeout="2")
    finally:
        relay.stop()
    assert result.returncode == ExitCode.TIMED_OUT, result.stderr
    assert "did not answer within 2 s" in " ".join(result.stderr.split())


def test_the_relay_going_away_before_the_session_is_exit_5(homes: Homes, scratch: Path) -> None:
    relay = start_relay()
    try:
        # The relay stops while the controller waits for an agent's first handshake message.
        stopper = threading.Timer(3.0, relay.stop)
        stopper.start()
        result = _shell(homes, scratch, relay.url, timeout="30")
        stopper.join()
    finally:
        relay.stop()
    assert result.returncode == ExitCode.RELAY, result.stderr
    assert "The relay closed the connection before the session started" in " ".join(
        result.stderr.split()
    )
