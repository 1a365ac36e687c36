"""Remote-shell test tools: paired homes, agent processes, ``amesh shell`` through pexpect."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET, Device
from authmesh.store import AmeshHome, Context, create_identity, load_context, now_timestamp
from tests.support.cli import CLI
from tests.support.relayproc import RelayProcess, wait_until

SHELL = "/bin/sh"
TERM = "vt220"


# Tests open many sessions from one IP; the limiter is tested with the relay.
RELAY_ENV = {
    "AMESH_SHELL_FAILURE_LIMIT": "10000",
    "AMESH_SHELL_REQUEST_LIMIT": "10000",
    "AMESH_AGENT_FAILURE_LIMIT": "10000",
}


def registered_agents(relay: RelayProcess) -> int:
    """How many agents the relay lists (-1 while it does not answer)."""
    health = relay.health()
    return int(health["agents"]) if health else -1


@dataclass
class Homes:
    """Amesh dirs of every party, paired by direct allow-list writes."""

    target: Path
    controller: Path
    ungranted: Path
    """A paired controller without the shell grant."""
    target_peer: Path
    """A device the target knows as a *target* that tries to open a shell on it."""
    target_id: str
    controller_id: str


def make_home(base: Path, name: str) -> tuple[Path, str, str]:
    home = base / name
    home.mkdir(mode=0o700)
    result = create_identity(
        name, backend="encrypted-file", home=AmeshHome(home), environ={}, progress=lambda _: None
    )
    return home, result.identity.device_id, result.identity.public_key


@functools.cache
def home_context(home: Path) -> Context:
    """The store of ``home``, unlocked once (each unlock costs an Argon2id derivation)."""
    return load_context(home=AmeshHome(home), environ={})


def pair_device(
    home: Path, device_id: str, public_key: str, name: str, role: str, shell: bool
) -> None:
    home_context(home).allow_list.add(
        Device.new(
            device_id=device_id,
            public_key=public_key,
            friendly_name=name,
            role=role,
            added_at=now_timestamp(),
            shell=True if shell else None,
        )
    )


def paired_box(homes: Homes, scratch: Path, name: str) -> Path:
    """A new target home ``name`` paired with the controller, which may open shells on it."""
    box, box_id, box_key = make_home(scratch, name)
    controller = home_context(homes.controller).identity
    pair_device(box, controller.device_id, controller.public_key, "laptop", ROLE_CONTROLLER, True)
    pair_device(homes.controller, box_id, box_key, name, ROLE_TARGET, False)
    return box


def cli_env(home: Path, scratch: Path) -> dict[str, str]:
    return {
        "AUTH_MESH_DIR": str(home),
        "HOME": str(scratch),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": TERM,
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


class AgentProcess:
    """``amesh agent start`` with its log captured to a file."""

    def __init__(
        self, home: Path, relay: RelayProcess, scratch: Path, name: str, *extra: str
    ) -> None:
        self.log_path = scratch / f"{name}.log"
        self.record_dir = scratch / f"{name}-recordings"
        env = cli_env(home, scratch)
        args = [
            *CLI,
            "agent",
            "start",
            "--allow-root",
            "--relay",
            relay.url,
            "--shell",
            SHELL,
            "--max-sessions",
            "3",
            "--record",
            str(self.record_dir),
            *extra,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=log)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def count(self, text: str) -> int:
        return self.log().count(text)

    def wait_for(self, text: str, count: int = 1, timeout: float = 15) -> None:
        wait_until(lambda: self.count(text) >= count, timeout, f"agent log line {text!r}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)


@contextlib.contextmanager
def box_agent(
    homes: Homes, relay: RelayProcess, scratch: Path, name: str, *extra: str, registered: str
) -> Iterator[AgentProcess]:
    """An agent for a new target ``name`` paired with the controller, once ``registered``
    is in its log; stopped afterwards."""
    agent = AgentProcess(paired_box(homes, scratch, name), relay, scratch, f"{name}-agent", *extra)
    try:
        agent.wait_for(registered)
        yield agent
    finally:
        agent.stop()


# Every long-running test command carries this number, so leftovers can be found in /proc.
MARKER = "98765"


def marked_processes() -> list[int]:
    """Live processes whose command line contains :data:`MARKER` (zombies excluded)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                command = cmdline.read()
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if MARKER.encode() in command and state != b"Z" and b"pytest" not in command:
            found.append(int(entry.name))
    return found


def spawn_shell(
    home: Path,
    relay: RelayProcess,
    scratch: Path,
    *extra: str,
    rows: int = 30,
    cols: int = 100,
    url: str | None = None,
    target: str = "prod-box",
) -> pexpect.spawn:
    """``amesh shell TARGET`` on a pseudo-terminal of ``cols`` x ``rows``."""
    return pexpect.spawn(
        CLI[0],
        [*CLI[1:], "shell", target, "--relay", url or relay.url, "--timeout", "10", *extra],
        env=cli_env(home, scratch),
        dimensions=(rows, cols),
        timeout=15,
        encoding="utf-8",
        codec_errors="replace",
    )


def run_cli(
    home: Path, scratch: Path, *args: str, stdin: str = "", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The real CLI with ``stdin`` piped in (not a terminal) and its output captured."""
    return subprocess.run(
        [*CLI, *args],
        env=cli_env(home, scratch),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_shell(
    home: Path,
    relay: RelayProcess,
    scratch: Path,
    *args: str,
    target: str = "prod-box",
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """``amesh shell TARGET`` through ``relay`` with ``stdin`` piped in (not a terminal)."""
    return run_cli(home, scratch, "shell", target, "--relay", relay.url, *args, stdin=stdin)


def type_line(child: pexpect.spawn, command: str, expected: str) -> None:
    """Type ``command`` + Enter into the remote shell and wait for ``expected`` in its output."""
    child.send(command + "\r")
    child.expect_exact(expected)


def exit_status(child: pexpect.spawn) -> int:
    """Wait for the controller process to end; its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, child.signalstatus
    return int(child.exitstatus)
