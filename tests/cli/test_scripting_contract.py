"""The scripting contract of ``amesh`` (docs/cli.md): every row of the exit-status table, and
every ``--json`` output read line by line with stdout and stderr kept apart."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from authmesh.cli._exit_codes import ExitCode
from authmesh.core._allowlist import Device as Entry
from authmesh.core._keys import PrivateKey
from authmesh.pairing._bootstrap import issue_token
from authmesh.pairing._identity import MAX_FRIENDLY_NAME_CHARS
from authmesh.store._allowlist_store import now_timestamp
from authmesh.store._context import load_context
from authmesh.store._home import AmeshHome
from tests.support.cli import CLI, STEP_TIMEOUT, AmeshRunner, Device, unwrapped
from tests.support.relayproc import RelayProcess, free_port


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line is one JSON object (nothing else may be on stdout)."""
    return [json.loads(line) for line in stdout.splitlines()]


def add_target(device: Device, name: str) -> PrivateKey:
    """Record a (made-up) paired target in ``device``'s allow list."""
    key = PrivateKey.generate()
    environ = {"AUTH_MESH_DIR": str(device.home)}
    context = load_context(AmeshHome.from_env(environ), environ)
    context.allow_list.upsert(
        Entry.new(
            device_id=key.device_id,
            public_key=key.public_key_b64,
            friendly_name=name,
            role="target",
            added_at=now_timestamp(),
        )
    )
    return key


# ----------------------------------------------------------------------------- exit statuses


def test_exit_0_and_1(amesh: AmeshRunner, home: Path, make_device: Callable[..., Device]) -> None:
    device = make_device("Laptop")
    assert amesh(["list"], device.home).returncode == ExitCode.OK
    missing = amesh(["list"], home)
    assert (missing.returncode, missing.stdout) == (ExitCode.FAILED, "")
    assert "No identity found" in missing.stderr


def test_exit_2_usage_errors_change_nothing(
    amesh: AmeshRunner, home: Path, make_device: Callable[..., Device]
) -> None:
    unknown_flag = amesh(["list", "--no-such-flag"], home)
    assert unknown_flag.returncode == ExitCode.USAGE
    long_name = amesh(["init", "--name", "x" * (MAX_FRIENDLY_NAME_CHARS + 1)], home)
    assert long_name.returncode == ExitCode.USAGE
    assert f"at most {MAX_FRIENDLY_NAME_CHARS}" in unwrapped(long_name.stderr)
    assert not (home / "identity.json").exists()
    blank = amesh(["init", "--name", "  "], home)
    assert blank.returncode == ExitCode.USAGE
    device = make_device("Laptop")
    provision = amesh(
        ["provision", "--name", "y" * 300, "--relay", "ws://127.0.0.1:9/ws"], device.home
    )
    assert provision.returncode == ExitCode.USAGE
    bad_code = amesh(["invite", "12ab56-1234-5678"], device.home)
    assert bad_code.returncode == ExitCode.USAGE
    agent = amesh(["agent", "start", "--shell", "/nonexistent/shell"], device.home)
    assert agent.returncode == ExitCode.USAGE


def test_exit_3_refused_and_4_expired_tokens(amesh: AmeshRunner, home: Path) -> None:
    key = PrivateKey.generate()
    issued = issue_token(key, name="box", relay_url="ws://127.0.0.1:9/ws", ttl_seconds=3600)
    header, payload, signature = issued.token.rsplit(".", 2)
    forged = f"{header}.{payload}.{'A' * len(signature)}"
    refused = amesh(["bootstrap", forged], home)
    assert refused.returncode == ExitCode.REFUSED, refused.stderr
    expired_token = issue_token(
        key, name="box", relay_url="ws://127.0.0.1:9/ws", ttl_seconds=60, now=time.time() - 3600
    ).token
    expired = amesh(["bootstrap", expired_token], home)
    assert expired.returncode == ExitCode.TIMED_OUT, expired.stderr
    assert "expired" in expired.stderr
    assert not (home / "identity.json").exists()


def test_exit_5_relay_unreachable_names_url_and_cause(
    amesh: AmeshRunner, make_device: Callable[..., Device], module_relay: RelayProcess
) -> None:
    device = make_device("Laptop")
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    refused = amesh(["invite", "123456-1234-5678", "--relay", dead], device.home)
    assert refused.returncode == ExitCode.RELAY
    assert f"Could not reach the relay at {dead}: connection refused" in unwrapped(refused.stderr)
    wrong_path = module_relay.url.replace("/ws", "/wrong")
    not_found = amesh(["invite", "123456-1234-5678", "--relay", wrong_path], device.home)
    assert not_found.returncode == ExitCode.RELAY
    assert "HTTP 404" in unwrapped(not_found.stderr) and "/ws" in not_found.stderr
    dns = amesh(["invite", "123456-1234-5678", "--relay", "ws://relay.invalid/ws"], device.home)
    assert dns.returncode == ExitCode.RELAY
    assert "DNS" in dns.stderr
    tls_url = module_relay.url.replace("ws://", "wss://")
    tls = amesh(["invite", "123456-1234-5678", "--relay", tls_url], device.home)
    assert tls.returncode == ExitCode.RELAY
    assert "TLS error" in unwrapped(tls.stderr)


def test_shell_uses_the_table_before_its_session_starts(
    amesh: AmeshRunner, make_device: Callable[..., Device], module_relay: RelayProcess
) -> None:
    device = make_device("Laptop")
    add_target(device, "quiet-box")
    env = {"AMESH_RELAY_URL": module_relay.url}
    no_agent = amesh(["shell", "quiet-box", "-c", "true", "--timeout", "1"], device.home, env=env)
    assert no_agent.returncode == ExitCode.TIMED_OUT, no_agent.stderr
    unknown = amesh(["shell", "nobody", "-c", "true"], device.home, env=env)
    assert unknown.returncode == ExitCode.FAILED
    dead = amesh(
        ["shell", "quiet-box", "-c", "true", "--relay", f"ws://127.0.0.1:{free_port()}/ws"],
        device.home,
    )
    assert dead.returncode == ExitCode.RELAY


def test_errors_under_json_are_one_object_on_stdout(amesh: AmeshRunner, home: Path) -> None:
    result = amesh(["list", "--json"], home)
    assert result.returncode == ExitCode.FAILED
    (error,) = json_lines(result.stdout)
    assert error["event"] == "error" and error["code"] == "no_identity"
    assert error["exitCode"] == ExitCode.FAILED and "amesh init" in error["message"]
    assert "Error:" in result.stderr


# ----------------------------------------------------------------------------- --json outputs


def test_init_list_revoke_grant_json(amesh: AmeshRunner, homes: Callable[[], Path]) -> None:
    home = homes()
    created = amesh(["init", "--name", "Box", "--backend", "encrypted-file", "--json"], home)
    assert created.returncode == 0, created.stderr
    (event,) = json_lines(created.stdout)
    assert event["event"] == "identity_created" and event["friendlyName"] == "Box"
    assert event["storageBackend"] == "encrypted-file" and event["softwareOnly"] is True
    assert event["passphraseFile"] == str(home / ".passphrase")
    assert "Identity created." in created.stderr
    device = Device(home, amesh.env(home), event["deviceId"], "Box")

    controller = PrivateKey.generate()
    environ = {"AUTH_MESH_DIR": str(home)}
    load_context(AmeshHome.from_env(environ), environ).allow_list.upsert(
        Entry.new(
            device_id=controller.device_id,
            public_key=controller.public_key_b64,
            friendly_name="ops laptop",
            role="controller",
            added_at=now_timestamp(),
        )
    )
    listed = amesh(["list", "--json"], device.home)
    (listing,) = json_lines(listed.stdout)
    assert listing["event"] == "list" and listing["device"]["deviceId"] == device.device_id
    assert [d["friendlyName"] for d in listing["devices"]] == ["ops laptop"]

    granted = amesh(["grant", controller.device_id, "--shell", "--json"], device.home)
    (grant,) = json_lines(granted.stdout)
    assert grant == {
        "event": "permissions",
        "deviceId": controller.device_id,
        "friendlyName": "ops laptop",
        "shell": True,
    }

    revoked = amesh(["revoke", "ops laptop", "--yes", "--json"], device.home)
    assert revoked.returncode == 0, revoked.stderr
    (revoke,) = json_lines(revoked.stdout)
    assert revoke == {
        "event": "revoked",
        "deviceId": controller.device_id,
        "friendlyName": "ops laptop",
        "role": "controller",
    }
    assert "removed from allow list" in revoked.stderr
    assert json_lines(amesh(["list", "--json"], device.home).stdout)[0]["devices"] == []


def test_revoke_by_name_must_be_unique(
    amesh: AmeshRunner, make_device: Callable[..., Device]
) -> None:
    device = make_device("Laptop")
    add_target(device, "twin")
    add_target(device, "twin")
    result = amesh(["revoke", "twin", "--yes"], device.home)
    assert result.returncode == ExitCode.USAGE
    assert "use the device id" in unwrapped(result.stderr)


class Lines:
    """A child's stdout or stderr, read line by line on a thread, each wait with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def next(self) -> str:
        return self._lines.get(timeout=STEP_TIMEOUT)

    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.next())
        return document


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(STEP_TIMEOUT)


def start(
    processes: list[subprocess.Popen[str]], device: Device, relay: RelayProcess, *args: str
) -> tuple[subprocess.Popen[str], Lines]:
    process = subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**device.env, "AMESH_RELAY_URL": relay.url},
    )
    processes.append(process)
    assert process.stdout is not None
    return process, Lines(process.stdout)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    assert process.stderr is not None
    status = process.wait(STEP_TIMEOUT)
    return status, process.stderr.read()


def test_listen_and_invite_json_events_v3(
    make_device: Callable[..., Device], module_relay: RelayProcess, processes: list
) -> None:
    target, controller = make_device("Server"), make_device("Worker")
    listener, target_out = start(processes, target, module_relay, "listen", "--json")
    code = target_out.event()
    assert code["event"] == "code" and code["expiresIn"] > 0
    inviter, controller_out = start(
        processes, controller, module_relay, "invite", code["code"], "--json"
    )
    assert controller_out.event() == {"event": "peer_joined"}
    assert target_out.event() == {"event": "peer_joined"}
    peer = controller_out.event()
    assert (peer["event"], peer["deviceId"]) == ("peer", target.device_id)
    on_target, on_controller = target_out.event(), controller_out.event()
    assert on_target["event"] == on_controller["event"] == "paired"
    assert (on_target["deviceId"], on_target["role"]) == (controller.device_id, "controller")
    assert (on_controller["deviceId"], on_controller["role"]) == (target.device_id, "target")
    assert on_target["protocol"] == on_controller["protocol"] == 3
    for process in (listener, inviter):
        status, stderr = finish(process)
        assert status == 0, stderr
        assert "Paired." in stderr


def test_listen_and_invite_json_events_v2(
    make_device: Callable[..., Device], module_relay: RelayProcess, processes: list
) -> None:
    """v2 adds the verification code: the controller's event carries it, the target's
    operator types it on stdin (its question is on stderr)."""
    target, controller = make_device("Server"), make_device("Worker")
    listener, target_out = start(processes, target, module_relay, "listen", "--v2", "--json")
    code = target_out.event()
    assert code["event"] == "code" and len(code["code"]) == 6
    inviter, controller_out = start(
        processes,
        controller,
        module_relay,
        "invite",
        "--v2",
        "--no-confirm",
        code["code"],
        "--json",
    )
    assert controller_out.event() == {"event": "peer_joined"}
    sas = controller_out.event()
    assert sas["event"] == "verification_code" and sas["deviceId"] == target.device_id
    assert target_out.event() == {"event": "peer_joined"}
    assert listener.stdin is not None
    listener.stdin.write(sas["code"] + "\n")
    listener.stdin.flush()
    on_target, on_controller = target_out.event(), controller_out.event()
    assert on_target["event"] == on_controller["event"] == "paired"
    assert on_target["protocol"] == on_controller["protocol"] == 2
    assert on_target["confirmed"] is on_controller["confirmed"] is True
    for process in (listener, inviter):
        status, stderr = finish(process)
        assert status == 0, stderr


def test_provision_and_bootstrap_json_events(
    amesh: AmeshRunner,
    make_device: Callable[..., Device],
    homes: Callable[[], Path],
    module_relay: RelayProcess,
    processes: list,
) -> None:
    controller = make_device("Controller")
    provisioner, provision_out = start(
        processes, controller, module_relay, "provision", "--name", "edge-7", "--json"
    )
    issued = provision_out.event()
    assert issued["event"] == "token_issued" and issued["name"] == "edge-7"
    target_home = homes()
    result = amesh(
        ["bootstrap", issued["token"], "--backend", "encrypted-file", "--json"],
        target_home,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    created, paired = json_lines(result.stdout)
    assert created["event"] == "identity_created" and created["friendlyName"] == "edge-7"
    assert paired["event"] == "paired" and paired["deviceId"] == controller.device_id
    on_controller = provision_out.event()
    assert on_controller["event"] == "paired" and on_controller["deviceId"] == created["deviceId"]
    assert (on_controller["role"], on_controller["protocol"]) == ("target", 2)
    status, stderr = finish(provisioner)
    assert status == 0, stderr
    assert "added to the allow list as a target" in stderr


def test_completion_scripts(amesh: AmeshRunner, home: Path) -> None:
    for shell, marker in (
        ("bash", "complete -o"),
        ("zsh", "compdef"),
        ("fish", "complete --no-files --command amesh"),
    ):
        result = amesh(["completion", shell], home)
        assert result.returncode == 0, result.stderr
        assert marker in result.stdout and "_AMESH_COMPLETE" in result.stdout
    assert amesh(["completion", "tcsh"], home).returncode == ExitCode.USAGE


def test_version_matches_the_package(amesh: AmeshRunner, home: Path) -> None:
    import authmesh

    result = amesh(["--version"], home)
    assert result.stdout == f"amesh, version {authmesh.__version__}\n"
