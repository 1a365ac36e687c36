"""Key rotation end to end: `amesh rotate` (real CLI) while calling three uvicorn servers.

Each server is its own process running FastAPI behind ``AuthMeshMiddleware`` with
``Verifier.from_home``; the controller is this test process signing with
``AuthMeshAuth`` on its amesh home, and rotates through the real ``amesh`` command.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from authmesh.core._allowlist import Device
from authmesh.core._keys import PrivateKey
from authmesh.core._rotation import create_statement, encode_chain
from authmesh.sdk._client import AuthMeshAuth
from authmesh.sdk._rotation import ACK_HEADER, ROTATION_HEADER, RotationAnnouncer
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.store import AllowListStore, AmeshHome, create_identity, load_context
from authmesh.store._identity import load_identity
from authmesh.store._rotation import load_state
from tests.sdk.harness import free_port, wait_for
from tests.support.relayproc import start_relay

PASSPHRASE = "rotation-test-passphrase"
CLI = [sys.executable, "-m", "authmesh.cli"]
TIMEOUT = 60.0


def server_app() -> Any:
    """uvicorn ``--factory`` target: a FastAPI app verifying with this home's allow list."""
    app = FastAPI()
    verifier = Verifier.from_home(os.environ["AUTH_MESH_DIR"], allow_list_recheck_seconds=0)
    app.add_middleware(AuthMeshMiddleware, verifier=verifier, exempt_paths={"/health"})

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        return {"deviceId": request.state.authmesh.device_id}

    return _without_rotation(app) if os.environ.get("NO_ROTATION") else app


def _without_rotation(app: Any) -> Any:
    """A server that knows nothing of rotations (as TypeScript amesh): the chain is ignored."""

    async def strip(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-authmesh-rotation"]
            scope = {**scope, "headers": headers}
        await app(scope, receive, send)

    return strip


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_MESH_", "AMESH_"))}
    env.update(AUTH_MESH_DIR=str(home), AUTH_MESH_PASSPHRASE=PASSPHRASE, PYTHONPATH=os.getcwd())
    return env


def amesh(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@dataclass
class Server:
    home: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @functools.cached_property
    def store(self) -> AllowListStore:
        return load_context(AmeshHome(self.home), _env(self.home)).allow_list

    def entries(self) -> list[dict[str, Any]]:
        """The server's allow list, its seal verified."""
        return [dict(device.fields) for device in self.store.read().devices]


def _identity(root: Path, name: str) -> Path:
    home = root / name
    create_identity(name, backend="encrypted-file", home=AmeshHome(home), environ=_env(home))
    return home


def _trust(server_home: Path, peer: Path, role: str = "controller", **extra: Any) -> None:
    peer_identity = load_identity(AmeshHome(peer))
    device = Device.new(
        device_id=peer_identity.device_id,
        public_key=peer_identity.public_key,
        friendly_name=peer_identity.friendly_name,
        role=role,
        added_at="2026-01-02T03:04:05.000Z",
        shell=True,
    )
    device = Device({**device.fields, **extra})
    load_context(AmeshHome(server_home), _env(server_home)).allow_list.add(device)


def _launch(home: Path, **env: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tests.sdk.test_rotation_e2e:server_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**_env(home), **env},
    )
    return Server(home, port, process)


def _wait_up(server: Server) -> None:
    def up() -> bool:
        assert server.process.poll() is None, "server process exited"
        try:
            return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, "the uvicorn server", timeout=TIMEOUT)


def _stop(servers: list[Server]) -> None:
    for server in servers:
        server.process.terminate()
    for server in servers:
        server.process.wait(TIMEOUT)


@dataclass
class Fleet:
    controller: Path
    servers: list[Server]


SERVER_NAMES = ("server0", "server1", "server2", "legacy")


@pytest.fixture(scope="module")
def fleet_template() -> Iterator[Path]:
    """A controller and four servers trusting it, made once (each identity costs Argon2id)."""
    root = Path(tempfile.mkdtemp(prefix="amrot"))
    controller = _identity(root, "controller")
    for name in SERVER_NAMES:
        _trust(_identity(root, name), controller)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fleet(fleet_template: Path) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="amrot")) / "fleet"
    shutil.copytree(fleet_template, root)
    servers = [_launch(root / name) for name in SERVER_NAMES[:3]]
    try:
        for server in servers:
            _wait_up(server)
        yield Fleet(root / "controller", servers)
    finally:
        _stop(servers)
        shutil.rmtree(root.parent, ignore_errors=True)


def _client(home: Path) -> tuple[httpx.Client, PrivateKey]:
    """A controller client following rotations at once; also the key it starts with."""
    context = load_context(AmeshHome(home), _env(home))
    rotation = RotationAnnouncer(
        AmeshHome(home),
        context,
        recheck_seconds=0,
        load=lambda amesh_home: load_context(amesh_home, _env(home)),
    )
    auth = AuthMeshAuth(context.signer, context.identity.public_key, rotation=rotation)
    signer = context.signer
    assert isinstance(signer, PrivateKey)
    return httpx.Client(auth=auth, timeout=TIMEOUT), signer


def _with_key(key: PrivateKey, chain: str | None = None) -> httpx.Client:
    """A client signing with exactly ``key`` (and sending ``chain``), following nothing."""
    headers = {ROTATION_HEADER: chain} if chain else {}
    return httpx.Client(auth=AuthMeshAuth(RequestSigner(key)), headers=headers, timeout=TIMEOUT)


def _rotate(home: Path, *args: str) -> str:
    result = amesh(home, "rotate", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _current_key(home: Path) -> str:
    return str(json.loads((home / "identity.json").read_text())["publicKey"])


def test_each_server_switches_on_the_first_request_and_refuses_the_old_key(fleet: Fleet) -> None:
    client, old_key = _client(fleet.controller)
    for server in fleet.servers:
        assert client.get(f"{server.url}/whoami").status_code == 200
    before = {server.port: server.entries()[0] for server in fleet.servers}

    output = _rotate(fleet.controller, "--grace", "1d")
    assert "amesh revoke" in output and "amesh accept-rotation" in output  # re-pair advice
    new_key = _current_key(fleet.controller)
    assert new_key != old_key.public_key_b64

    for server in fleet.servers:
        first = client.get(f"{server.url}/whoami")
        assert first.status_code == 200, first.text
        assert ROTATION_HEADER in first.request.headers
        assert first.headers[ACK_HEADER] == "1"
        [entry] = server.entries()
        assert entry["publicKey"] == new_key and entry["keySeq"] == 1
        kept = ("friendlyName", "role", "permissions", "addedAt", "addedBy")
        assert {k: entry[k] for k in kept} == {k: before[server.port][k] for k in kept}
        second = client.get(f"{server.url}/whoami")
        assert second.status_code == 200
        assert ROTATION_HEADER not in second.request.headers  # acknowledged: not sent again
        assert _with_key(old_key).get(f"{server.url}/whoami").status_code == 401


def test_a_server_that_missed_a_rotation_takes_the_chain(fleet: Fleet) -> None:
    client, _ = _client(fleet.controller)
    first, missed = fleet.servers[0], fleet.servers[1]
    _rotate(fleet.controller, "--grace", "0s")
    assert client.get(f"{first.url}/whoami").status_code == 200
    _rotate(fleet.controller, "--grace", "0s")
    assert len(load_state(AmeshHome(fleet.controller)).chain) == 2

    for server in (missed, first):
        response = client.get(f"{server.url}/whoami")
        assert response.status_code == 200, response.text
        assert response.headers[ACK_HEADER] == "2"
        [entry] = server.entries()
        assert entry["publicKey"] == _current_key(fleet.controller) and entry["keySeq"] == 2
    # --grace 0s: both retired keys are gone from the keystore.
    assert sorted(p.name for p in (fleet.controller / "keys").iterdir()) == [
        f"{json.loads((fleet.controller / 'identity.json').read_text())['keyAlias']}.key.json"
    ]


def test_replayed_forged_and_revoked_statements_are_refused(fleet: Fleet) -> None:
    client, key0 = _client(fleet.controller)
    server, revoked_at = fleet.servers[0], fleet.servers[2]
    _rotate(fleet.controller, "--grace", "1d")
    key1_statement = load_state(AmeshHome(fleet.controller)).chain[0]
    assert client.get(f"{server.url}/whoami").status_code == 200
    _rotate(fleet.controller, "--grace", "1d")
    assert client.get(f"{server.url}/whoami").status_code == 200
    after = server.entries()

    # Replay: the first statement with a request signed by key 1 after the entry moved on.
    key1 = load_context(AmeshHome(fleet.controller), _env(fleet.controller)).keystore.signer(
        key1_statement.new_device_id
    )
    assert isinstance(key1, PrivateKey)
    replay = _with_key(key1, encode_chain([key1_statement]))
    assert replay.get(f"{server.url}/whoami").status_code == 401

    # Forged: a thief of key 0 (already rotated away here) names its own key.
    thief = PrivateKey.generate()
    stolen = encode_chain([create_statement(key0, thief, 1, key1_statement.ts)])
    assert _with_key(thief, stolen).get(f"{server.url}/whoami").status_code == 401
    # ... and a statement whose new-key signature is not the thief's.
    other = PrivateKey.generate()
    forged = create_statement(key0, other, 1, key1_statement.ts)
    tampered = encode_chain(
        [forged.__class__(**{**forged.__dict__, "new_key": thief.public_key_b64})]
    )
    untouched = fleet.servers[1]
    assert _with_key(thief, tampered).get(f"{untouched.url}/whoami").status_code == 401
    assert untouched.entries()[0]["publicKey"] == key0.public_key_b64
    assert server.entries() == after

    # Revoked: the server dropped the controller; its statement must not bring it back.
    result = amesh(revoked_at.home, "revoke", key0.device_id, "--yes")
    assert result.returncode == 0, result.stderr
    assert client.get(f"{revoked_at.url}/whoami").status_code == 401
    assert revoked_at.entries() == []


def test_rotation_during_concurrent_traffic_refuses_nothing_and_loses_nothing(
    fleet: Fleet,
) -> None:
    client, _ = _client(fleet.controller)
    server = fleet.servers[0]
    statuses: list[int] = []
    stop = threading.Event()
    added: list[str] = []

    def traffic() -> None:
        while not stop.is_set():
            statuses.append(client.get(f"{server.url}/whoami").status_code)

    def pair_more() -> None:
        # Another writer of the server's allow list (pairing) while the rotation lands.
        store = load_context(AmeshHome(server.home), _env(server.home)).allow_list
        for _ in range(10):
            peer = PrivateKey.generate()
            store.add(
                Device.new(
                    device_id=peer.device_id,
                    public_key=peer.public_key_b64,
                    friendly_name="peer",
                    role="target",
                    added_at="2026-01-02T03:04:05.000Z",
                )
            )
            added.append(peer.device_id)

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    workers.append(threading.Thread(target=pair_more))
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(statuses) >= 8, "traffic before the rotation", timeout=TIMEOUT)
        _rotate(fleet.controller, "--grace", "1d")
        count = len(statuses)
        wait_for(lambda: len(statuses) >= count + 20, "traffic after the rotation", TIMEOUT)
    finally:
        stop.set()
        for worker in workers:
            worker.join(TIMEOUT)
    assert set(statuses) == {200}
    ids = {entry["deviceId"] for entry in server.entries()}
    new_id = json.loads((fleet.controller / "identity.json").read_text())["deviceId"]
    assert ids == {new_id, *added}


def test_export_and_accept_for_a_target(tmp_path: Path) -> None:
    target = _identity(tmp_path, "target")
    controller = _identity(tmp_path, "ctl")
    _trust(controller, target, role="target")
    chain_file = tmp_path / "chain.json"
    output = _rotate(target, "--export", str(chain_file))
    assert "written to" in output

    accepted = amesh(controller, "accept-rotation", str(chain_file))
    assert accepted.returncode == 0, accepted.stderr
    listing = json.loads(amesh(controller, "list", "--json").stdout)["devices"]
    assert [(d["publicKey"], d["role"], d["keySeq"]) for d in listing] == [
        (_current_key(target), "target", 1)
    ]

    # A second rotation exported as a chain of two; a stale first chain is refused after.
    stale = chain_file.read_text()
    _rotate(target, "--export", str(chain_file))
    assert amesh(controller, "accept-rotation", str(chain_file)).returncode == 0
    (tmp_path / "stale.json").write_text(stale)
    refused = amesh(controller, "accept-rotation", str(tmp_path / "stale.json"))
    assert refused.returncode == 3  # refused (docs/cli.md)
    assert "pair the device again" in refused.stderr
    (tmp_path / "junk.json").write_text('{"type": "authmesh-rotation-chain"}')
    junk = amesh(controller, "accept-rotation", str(tmp_path / "junk.json"))
    assert junk.returncode == 1 and "not a rotation chain" in junk.stderr
    assert "Traceback" not in junk.stderr + refused.stderr


def test_expired_keys_are_refused_and_list_shows_ages(fleet: Fleet) -> None:
    client, _ = _client(fleet.controller)
    server = fleet.servers[0]
    controller_id = json.loads((fleet.controller / "identity.json").read_text())["deviceId"]
    assert amesh(server.home, "trust", controller_id, "--max-age", "5d").returncode == 0

    refused = client.get(f"{server.url}/whoami")
    assert refused.status_code == 401
    assert refused.json() == {"error": "key_expired"}
    listing = amesh(server.home, "list").stdout
    assert "(max 5d, EXPIRED)" in listing and ", key " in listing

    # An expired key cannot vouch for a successor: the owner must pair again.
    _rotate(fleet.controller)
    assert client.get(f"{server.url}/whoami").status_code == 401

    # Rotating before expiry keeps a server running; the successor's age starts then.
    healthy = fleet.servers[1]
    assert client.get(f"{healthy.url}/whoami").status_code == 200
    [entry] = healthy.entries()
    assert entry["keySeq"] == 1
    limited = amesh(healthy.home, "trust", entry["deviceId"], "--max-age", "30d")
    assert limited.returncode == 0, limited.stderr
    assert client.get(f"{healthy.url}/whoami").status_code == 200
    assert re.search(r", key \d+s old \(max 30d\)", amesh(healthy.home, "list").stdout)


def test_a_peer_without_rotation_support_keeps_the_old_key_for_the_grace_period(
    fleet: Fleet,
) -> None:
    legacy = _launch(fleet.controller.parent / "legacy", NO_ROTATION="1")
    try:
        _wait_up(legacy)
        client, old_key = _client(fleet.controller)
        assert client.get(f"{legacy.url}/whoami").status_code == 200
        _rotate(fleet.controller, "--grace", "1d")
        for _ in range(2):  # the first falls back, the next signs with the retired key at once
            response = client.get(f"{legacy.url}/whoami")
            assert response.status_code == 200
            assert response.json() == {"deviceId": old_key.device_id}
        assert legacy.entries()[0]["publicKey"] == old_key.public_key_b64
        # A rotation-aware server in the same fleet still switches.
        assert client.get(f"{fleet.servers[0].url}/whoami").headers[ACK_HEADER] == "1"
        # The key the legacy peer trusts is no longer the one being retired: pair it again.
        _rotate(fleet.controller, "--grace", "0s")
        assert client.get(f"{legacy.url}/whoami").status_code == 401
    finally:
        _stop([legacy])


def test_notify_delivers_the_rotation_through_the_relay(tmp_path: Path) -> None:
    target = _identity(tmp_path, "target")
    controller = _identity(tmp_path, "ctl")
    _trust(controller, target, role="target")
    _trust(target, controller, role="controller")
    relay = start_relay()
    try:
        rotating = subprocess.Popen(
            [*CLI, "rotate", "--notify", "1", "--relay", relay.url],
            env=_env(target),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert rotating.stdout is not None
        code = None
        for line in rotating.stdout:
            match = re.search(r"Code: ([0-9]{6})", line)
            if match:
                code = match.group(1)
                break
        assert code is not None, rotating.stderr.read() if rotating.stderr else ""
        accepted = amesh(controller, "accept-rotation", "--code", code, "--relay", relay.url)
        assert accepted.returncode == 0, accepted.stderr
        assert "now uses key" in accepted.stdout
        rest, errors = rotating.communicate(timeout=TIMEOUT)
        assert rotating.returncode == 0, errors
        assert "ctl (" in rest and "now trusts the new key" in rest
        [entry] = load_context(AmeshHome(controller), _env(controller)).allow_list.read().devices
        assert entry.public_key == _current_key(target) and entry.role == "target"

        # Nobody joins a wrong code; a bad code is refused in one sentence.
        refused = amesh(controller, "accept-rotation", "--code", "12ab", "--relay", relay.url)
        assert refused.returncode == 2 and "six digits" in refused.stderr
        both = amesh(controller, "accept-rotation", "f.json", "--code", "123456")
        assert both.returncode == 2 and "either" in both.stderr
    finally:
        relay.stop()


def test_a_running_server_keeps_verifying_after_rotating_its_own_key(fleet: Fleet) -> None:
    client, _ = _client(fleet.controller)
    server = fleet.servers[2]
    assert client.get(f"{server.url}/whoami").status_code == 200
    # The server's own key changes: its allow list is re-sealed for the new key while the
    # server process still holds the old sealing key.
    _rotate(server.home, "--grace", "0s")
    for _ in range(3):
        assert client.get(f"{server.url}/whoami").status_code == 200
    # A genuinely tampered file is still refused (the re-key does not mask it).
    path = server.home / "allow_list.json"
    path.write_text(path.read_text().replace('"controller"', '"Controller"', 1))
    assert client.get(f"{server.url}/whoami").status_code == 500
