"""The shipped systemd unit is valid and keeps the agent's safety properties."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "amesh-agent.service"


def test_unit_runs_the_agent_unprivileged_and_kills_every_session_on_stop() -> None:
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/amesh agent start" in text
    assert "--allow-root" not in text.split("ExecStart=", 1)[1].split("\n", 1)[0]
    assert "\nUser=" in text and "\nKillMode=control-group" in text
    assert "\nRestart=on-failure" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists and User= resolves: point both at this machine.
    unit = tmp_path / "amesh-agent.service"
    unit.write_text(
        UNIT.read_text()
        .replace("/usr/local/bin/amesh", f"{sys.executable} -m authmesh.cli")
        .replace("User=deploy", "User=root")
        .replace("Group=deploy", "Group=root")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
