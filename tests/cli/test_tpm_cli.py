"""The CLI on a TPM 2.0 (swtpm through tpm2-tools): detection, init --force, list, pairing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_pairing_e2e import start_pairing
from tests.store.conftest import swtpm  # noqa: F401  # the store's real-TPM fixture
from tests.support.cli import AmeshRunner, Device
from tests.support.relayproc import RelayProcess

DETECTED = (
    "\nGenerating P-256 keypair...\n\nDetecting key storage backend:\n"
    "  TPM 2.0           selected\n\nIdentity created.\n\n"
)


@pytest.fixture
def tpm_env(swtpm: str) -> dict[str, str]:  # noqa: F811
    return {"TPM2TOOLS_TCTI": swtpm, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def test_init_detects_the_tpm_and_force_replaces_its_key(
    amesh: AmeshRunner, home: Path, tpm_env: dict[str, str]
) -> None:
    result = amesh(["init", "--name", "tpm box"], home, env=tpm_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(DETECTED)
    assert "  Backend       : TPM 2.0\n" in result.stdout
    assert result.stderr == ""  # hardware-bound: no software warning
    identity = json.loads((home / "identity.json").read_text())
    assert (identity["storageBackend"], identity["keyAlias"]) == ("tpm2", "am_init")
    assert oct((home / "keys" / "am_init.hmac").stat().st_mode & 0o777) == "0o600"
    assert not (home / ".passphrase").exists()

    # W13: the reference cannot re-create a TPM identity (the am_init handle is taken).
    again = amesh(
        ["init", "--name", "tpm box 2", "--force", "--backend", "tpm2"], home, env=tpm_env
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((home / "identity.json").read_text())["deviceId"] != identity["deviceId"]
    listing = amesh(["list"], home, env=tpm_env)
    assert listing.returncode == 0, listing.stderr
    assert "  Backend       : TPM 2.0\n" in listing.stdout


def test_tpm_target_pairs_with_a_file_controller(
    amesh: AmeshRunner,
    home: Path,
    tpm_env: dict[str, str],
    make_device: Callable[[str], Device],
    module_relay: RelayProcess,
    children: list,
) -> None:
    assert (
        amesh(["init", "--name", "tpm box", "--backend", "tpm2"], home, env=tpm_env).returncode == 0
    )
    identity = json.loads((home / "identity.json").read_text())
    target = Device(home, amesh.env(home, tpm_env), identity["deviceId"], "tpm box")
    controller = make_device("Laptop")
    listener, inviter, sas = start_pairing(target, controller, module_relay, children)
    listener.sendline(sas)
    listener.expect("is now a trusted controller of this device")
    inviter.expect("added to the allow list as a target")
    assert [d["deviceId"] for d in target.allow_list(amesh)] == [controller.device_id]
    assert [d["deviceId"] for d in controller.entries()] == [target.device_id]


@pytest.mark.skipif(
    any(Path(node).exists() for node in ("/dev/tpmrm0", "/dev/tpm0")),
    reason="this host has a TPM device node",
)
def test_detection_names_the_missing_device_when_tpm2_tools_are_installed(
    amesh: AmeshRunner, home: Path, tmp_path: Path
) -> None:
    """tpm2-tools present, no TPM device and no TCTI: the line says the device is missing
    (not "tpm2-tools not found"), and the hint recommends nothing authmesh lacks."""
    tools = tmp_path / "bin"
    tools.mkdir()
    getcap = tools / "tpm2_getcap"
    getcap.write_text("#!/bin/sh\necho 'ERROR: tcti init failed' >&2\nexit 1\n")
    getcap.chmod(0o755)
    result = amesh(["init", "--name", "box"], home, env={"PATH": f"{tools}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "  TPM 2.0           not available (tpm2-tools found, but no TPM device" in result.stdout
    assert "Keychain" not in result.stderr and "macOS" not in result.stderr
