"""Fixtures for store tests: isolated homes and a real software TPM (swtpm)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.homes import isolated_env
from tests.support.swtpm import free_port_pair, wait_for_port


@pytest.fixture
def home_root(tmp_path: Path) -> Path:
    return tmp_path / "amesh"


@pytest.fixture
def env(home_root: Path) -> dict[str, str]:
    return isolated_env(home_root)


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[str]:
    """A fresh swtpm for one test; yields the ``TPM2TOOLS_TCTI`` value reaching it.

    Skipped only when swtpm or tpm2-tools are not installed (CI installs both).
    """
    missing = [tool for tool in ("swtpm", "tpm2_createprimary") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"!!! TPM 2.0 TESTS NOT RUN: {', '.join(missing)} not installed "
            "(apt-get install swtpm tpm2-tools) !!!"
        )
    state = tmp_path / "tpmstate"
    state.mkdir()
    port = free_port_pair()
    process = subprocess.Popen(
        [
            "swtpm", "socket", "--tpm2",
            "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--flags", "not-need-init,startup-clear",
            "--tpmstate", f"dir={state}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        yield f"swtpm:host=127.0.0.1,port={port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
