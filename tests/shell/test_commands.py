"""``amesh grant`` and the checks of ``amesh agent start`` / ``amesh shell`` before any network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authmesh.cli._exit_codes import ExitCode
from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET
from authmesh.core._keys import PrivateKey
from authmesh.store import AmeshHome, create_identity
from tests.support.shell import home_context, pair_device, run_cli


@pytest.fixture(scope="module")
def target_home(scratch: Path) -> tuple[Path, str, str]:
    """A target with one controller and one target paired; every test leaves it as it was."""
    home = scratch / "grant-target"
    home.mkdir(mode=0o700)
    create_identity("box", backend="encrypted-file", home=AmeshHome(home), environ={})
    controller, other_target = PrivateKey.generate(), PrivateKey.generate()
    pair_device(
        home, controller.device_id, controller.public_key_b64, "ops", ROLE_CONTROLLER, False
    )
    pair_device(home, other_target.device_id, other_target.public_key_b64, "db", ROLE_TARGET, False)
    return home, controller.device_id, other_target.device_id


def _shell_permission(home: Path, device_id: str) -> bool:
    device = home_context(home).allow_list.snapshot().find(device_id)
    assert device is not None
    return device.shell_allowed


def test_grant_and_revoke_shell_are_sealed_in_the_allow_list(
    target_home: tuple[Path, str, str], scratch: Path
) -> None:
    home, controller_id, _ = target_home
    granted = run_cli(home, scratch, "grant", controller_id, "--shell")
    assert granted.returncode == 0, granted.stderr
    assert f"Shell access granted to ops ({controller_id})." in granted.stdout
    assert _shell_permission(home, controller_id)  # read back through the HMAC seal
    revoked = run_cli(home, scratch, "grant", controller_id, "--revoke-shell")
    assert revoked.returncode == 0, revoked.stderr
    assert "Shell access revoked for ops" in revoked.stdout
    assert not _shell_permission(home, controller_id)


@pytest.mark.parametrize(
    ("who", "flags", "expected"),
    [
        ("controller", [], "Specify exactly one of --shell or --revoke-shell"),
        ("controller", ["--shell", "--revoke-shell"], "Specify exactly one of --shell or"),
        ("target", ["--shell"], "paired as a target, so it cannot open shells"),
        ("unknown", ["--shell"], "not found in allow list"),
    ],
)
def test_grant_refuses_with_one_sentence(
    target_home: tuple[Path, str, str],
    scratch: Path,
    who: str,
    flags: list[str],
    expected: str,
) -> None:
    home, controller_id, target_id = target_home
    device = {"controller": controller_id, "target": target_id}.get(who, "am_AAAAAAAAAAAAAAAA")
    result = run_cli(home, scratch, "grant", device, *flags)
    assert result.returncode == (ExitCode.FAILED if who == "unknown" else ExitCode.USAGE)
    assert expected in " ".join(result.stderr.replace("›", " ").split())
    assert "Traceback" not in result.stderr
    assert not _shell_permission(home, controller_id)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root guard can only be seen as root")
def test_agent_refuses_to_run_as_root_without_allow_root(
    target_home: tuple[Path, str, str], scratch: Path
) -> None:
    home, _, _ = target_home
    result = run_cli(home, scratch, "agent", "start", "--relay", "ws://127.0.0.1:9/ws")
    assert result.returncode == 2
    assert "Refusing to run the agent as root" in " ".join(result.stderr.replace("›", " ").split())


def test_shell_to_an_unknown_target_fails_before_the_network(
    target_home: tuple[Path, str, str], scratch: Path
) -> None:
    home, controller_id, _ = target_home
    for name in ("nowhere", controller_id):  # a controller entry is not a target
        result = run_cli(home, scratch, "shell", name, "--relay", "ws://127.0.0.1:9/ws", "-c", "id")
        assert result.returncode == ExitCode.FAILED
        assert "is not in the allow list as a target" in " ".join(
            result.stderr.replace("›", " ").split()
        )


def test_unreachable_relay_is_exit_5_with_a_sentence(
    target_home: tuple[Path, str, str], scratch: Path
) -> None:
    home, _, target_id = target_home
    result = run_cli(home, scratch, "shell", "db", "--relay", "ws://127.0.0.1:9/ws", "-c", "id")
    assert result.returncode == ExitCode.RELAY
    flat = " ".join(result.stderr.replace("›", " ").split())
    assert "Could not reach the relay at ws://127.0.0.1:9/ws" in flat
    assert target_id  # the target was resolved by its friendly name first
