"""Driving the real ``amesh`` CLI: amesh homes, their state files, devices spawned by pexpect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

from authmesh.cli._exit_codes import exit_code_for
from authmesh.pairing._errors import MESSAGES
from tests.support.relayproc import RelayProcess

# The reference transcripts were recorded with an amesh dir whose path is 27..30 characters
# long (the wrapped warning in init_force breaks right after it); a path of the same length
# wraps the same way, so stderr compares verbatim after the path is replaced.
HOME_PATH_LENGTH = 28
CLI = [sys.executable, "-m", "authmesh.cli"]


def make_home(parent: str = "/tmp") -> Path:
    """A fresh, empty amesh dir whose path is HOME_PATH_LENGTH characters long."""
    base = tempfile.mkdtemp(prefix="amc", dir=parent)
    home = Path(base) / ("h" * (HOME_PATH_LENGTH - len(base) - 1))
    assert len(str(home)) == HOME_PATH_LENGTH, home
    home.mkdir(mode=0o700)
    return home


def write_state(home: Path, files: dict[str, dict[str, Any]]) -> None:
    """Lay out a vector's ``files``/``state`` mapping (path -> mode + content) in ``home``."""
    for rel, spec in sorted(files.items()):
        target = home / rel
        mode = int(spec["mode"], 8)
        if rel.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(mode)
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if "content_hex" in spec:
            target.write_bytes(bytes.fromhex(spec["content_hex"]))
        else:
            target.write_bytes(spec["content"].encode("utf-8"))
        target.chmod(mode)


# Our advisory lock file (sdk-keystore.md W16: the reference has no locking); not part of the
# state the reference recorded.
LOCK_FILE = ".amesh.lock"


def read_state(home: Path) -> dict[str, dict[str, str]]:
    """Every file under ``home`` as {relative path: {mode, content}} (like state_after)."""
    state = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and path.name != LOCK_FILE:
            state[str(path.relative_to(home))] = {
                "mode": oct(path.stat().st_mode & 0o777),
                "content": path.read_bytes().decode("utf-8", "replace"),
            }
    return state


@dataclass
class AmeshRunner:
    """Runs the real CLI in a subprocess with a controlled environment."""

    scratch: Path
    no_tpm_path: str

    def env(self, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "AUTH_MESH_DIR": str(home),
            "HOME": str(self.scratch),
            # No tpm2-tools on PATH: the host under test behaves like the reference's recording
            # host ("Linux without tpm2-tools"); the CLI is started by absolute path.
            "PATH": self.no_tpm_path,
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        }
        env.update(extra or {})
        return env

    def __call__(
        self,
        args: list[str],
        home: Path,
        *,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=self.env(home, env),
            timeout=timeout,
            check=False,
        )

    def on_terminal(
        self, args: list[str], home: Path, *, env: dict[str, str] | None = None, stdin: str = ""
    ) -> tuple[int, str]:
        """Run on a pty (80 columns, no echo) and type ``stdin``: exit status and output
        (stdout and stderr interleaved, as an operator sees them, with ``\n`` line ends)."""
        child = pexpect.spawn(
            CLI[0],
            [*CLI[1:], *args],
            env=self.env(home, env),
            timeout=STEP_TIMEOUT,
            dimensions=(24, 80),
        )
        child.setecho(False)
        child.send(stdin)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus is not None, child.signalstatus
        return child.exitstatus, (child.before or b"").decode().replace("\r\n", "\n")


# Tests in one module share a relay; several provoke failures (unknown codes) on purpose, and
# all open codes from 127.0.0.1, which must not trip the per-address limits meant for attackers.
SHARED_RELAY_ENV = {
    "AMESH_PAIRING_FAILURE_LIMIT": "1000",
    "AMESH_BOOTSTRAP_FAILURE_LIMIT": "1000",
    "AMESH_LISTEN_LIMIT": "1000",
}


STEP_TIMEOUT = 30


@dataclass
class Device:
    """An amesh home with an identity, and the environment to run the CLI on it."""

    home: Path
    env: dict[str, str]
    device_id: str
    name: str

    def spawn(self, *args: str, relay: RelayProcess | str) -> pexpect.spawn:
        url = relay if isinstance(relay, str) else relay.url
        return pexpect.spawn(
            CLI[0],
            [*CLI[1:], *args],
            env={**self.env, "AMESH_RELAY_URL": url, "TERM": "dumb", "COLUMNS": "120"},
            timeout=STEP_TIMEOUT,
            dimensions=(40, 120),
        )

    def allow_list(self, amesh: AmeshRunner) -> list[dict[str, Any]]:
        """The allow list as ``amesh list --json`` reports it (verifies the seal)."""
        result = amesh(["list", "--json"], self.home, env=self.env)
        assert result.returncode == 0, result.stderr
        devices: list[dict[str, Any]] = json.loads(result.stdout)["devices"]
        return devices

    def entries(self) -> list[dict[str, Any]]:
        """The allow-list file's entries, read directly (fast; no key unlock)."""
        path = self.home / "allow_list.json"
        if not path.exists():
            return []
        devices: list[dict[str, Any]] = json.loads(path.read_text())["devices"]
        return devices


def unwrapped(text: str | bytes) -> str:
    """Output with oclif's line wrapping undone (wrap-ansi keeps every space, so joining the
    continuation lines restores each message exactly)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\n ›   ", "")


def fails_with(child: pexpect.spawn, message: str, status: int | None = None) -> None:
    """The child ends with exit ``status`` after printing ``message`` as its one error; for a
    pairing message (:data:`MESSAGES`) the status defaults to the table's for its code."""
    if status is None:
        (code,) = [code for code, text in MESSAGES.items() if text == message]
        status = exit_code_for(code)
    child.expect(pexpect.EOF)
    output = unwrapped(child.before or b"")
    child.close()
    assert message in output, output
    assert output.count("Error:") == 1, output
    assert "Traceback" not in output
    assert child.exitstatus == status
