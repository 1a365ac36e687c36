"""``amesh provision`` + ``amesh bootstrap`` end to end through a real relay process.

The controller mints a token and watches for it; a fresh machine redeems it with
``amesh bootstrap``; both allow lists are checked, then a replay of the same token on another
fresh machine is refused with one clear sentence and writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pexpect
import pytest

from authmesh.cli._exit_codes import ExitCode
from authmesh.core._bootstrap_token import BootstrapTokenError
from authmesh.pairing._errors import MESSAGES
from tests.support.cli import AmeshRunner, Device, unwrapped
from tests.support.relayproc import RelayProcess

TOKEN = re.compile(rb"amesh-bt-v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@pytest.fixture
def provisioner(make_device: Callable[..., Device]) -> Device:
    return make_device("Controller")


def provision(
    controller: Device, relay: RelayProcess, children: list[pexpect.spawn], *args: str
) -> tuple[pexpect.spawn, str]:
    child = controller.spawn("provision", "--name", "Edge box", *args, relay=relay)
    children.append(child)
    child.expect(TOKEN)
    token = child.match.group(0).decode()
    child.expect("Waiting for the target")
    return child, token


def test_provision_then_bootstrap_then_replay(
    amesh: AmeshRunner,
    provisioner: Device,
    module_relay: RelayProcess,
    homes: Callable[[], Path],
    children: list[pexpect.spawn],
) -> None:
    watcher, token = provision(provisioner, module_relay, children)
    target_home = homes()
    result = amesh(["bootstrap", token, "--backend", "encrypted-file"], target_home, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    watcher.expect("added to the allow list as a target")
    watcher.expect(pexpect.EOF)
    watcher.close()
    assert watcher.exitstatus == 0

    identity = json.loads((target_home / "identity.json").read_text())
    assert identity["friendlyName"] == "Edge box"
    target_list = json.loads(amesh(["list", "--json"], target_home).stdout)["devices"]
    assert [(d["deviceId"], d["role"]) for d in target_list] == [
        (provisioner.device_id, "controller")
    ]
    controller_list = json.loads(amesh(["list", "--json"], provisioner.home).stdout)["devices"]
    assert [(d["deviceId"], d["role"], d["friendlyName"]) for d in controller_list] == [
        (identity["deviceId"], "target", "Edge box")
    ]

    replay_home = homes()
    replay = amesh(["bootstrap", token, "--backend", "encrypted-file"], replay_home)
    assert replay.returncode == ExitCode.REFUSED
    assert MESSAGES["token_already_used"] in unwrapped(replay.stderr)
    assert replay.stderr.count("Error:") == 1
    assert not (replay_home / "identity.json").exists()


def test_bootstrap_rejects_garbage_and_expired_tokens_before_any_io(
    amesh: AmeshRunner, homes: Callable[[], Path]
) -> None:
    home = homes()
    garbage = amesh(["bootstrap", "amesh-bt-v1.not-a-token"], home)
    assert garbage.returncode == ExitCode.USAGE
    assert str(BootstrapTokenError("invalid_token_format")) in unwrapped(garbage.stderr)
    assert not (home / "identity.json").exists()


def test_bootstrap_over_an_identity_names_a_way_forward_that_works(
    amesh: AmeshRunner,
    provisioner: Device,
    make_device: Callable[..., Device],
    module_relay: RelayProcess,
    children: list,
) -> None:
    watcher, token = provision(provisioner, module_relay, children)
    used = make_device("Used box")
    result = amesh(["bootstrap", token], used.home)
    assert result.returncode == ExitCode.FAILED
    message = unwrapped(result.stderr)
    assert "already has an identity" in message and "amesh bootstrap --force" in message
    replaced = amesh(
        ["bootstrap", "--force", token, "--backend", "encrypted-file"], used.home, timeout=60
    )
    assert replaced.returncode == 0, replaced.stderr
    watcher.expect("added to the allow list as a target")
    identity = json.loads((used.home / "identity.json").read_text())
    assert identity["deviceId"] != used.device_id and identity["friendlyName"] == "Edge box"


def test_provision_ttl_over_24h_is_refused(amesh: AmeshRunner, provisioner: Device) -> None:
    result = amesh(["provision", "--name", "x", "--ttl", "25h"], provisioner.home)
    assert result.returncode == ExitCode.USAGE
    assert str(BootstrapTokenError("ttl_too_long")) in unwrapped(result.stderr)


def test_bootstrap_without_a_watching_controller_leaves_no_identity(
    amesh: AmeshRunner,
    provisioner: Device,
    module_relay: RelayProcess,
    homes: Callable[[], Path],
    children: list[pexpect.spawn],
) -> None:
    watcher, token = provision(provisioner, module_relay, children)
    watcher.terminate(force=True)
    watcher.expect(pexpect.EOF)
    home = homes()
    result = amesh(["bootstrap", token, "--backend", "encrypted-file"], home)
    assert result.returncode == ExitCode.FAILED
    assert MESSAGES["no_watcher"] in unwrapped(result.stderr)
    assert result.stderr.count("Error:") == 1
    assert not (home / "identity.json").exists()
    assert list((home / "keys").glob("*.key.json")) == []


def test_provision_json_output(
    provisioner: Device, module_relay: RelayProcess, children: list[pexpect.spawn]
) -> None:
    child = provisioner.spawn(
        "provision", "--name", "Edge", "--ttl", "30m", "--output", "json", relay=module_relay
    )
    children.append(child)
    child.expect(rb"(\{\"event\": \"token_issued\".*\})\r\n")
    issued = json.loads(child.match.group(1))
    assert list(issued) == ["event", "token", "jti", "name", "issuedAt", "expiresAt", "relay"]
    assert TOKEN.fullmatch(issued["token"].encode())
    assert (issued["name"], issued["relay"]) == ("Edge", module_relay.url)
    lifetime = datetime.fromisoformat(issued["expiresAt"]) - datetime.fromisoformat(
        issued["issuedAt"]
    )
    assert lifetime.total_seconds() == 1800
    child.expect("Waiting for the target")
