"""The examples end to end: two real amesh homes, a real server, the client script.

The server home trusts the client as a controller, the client home records the
server as a target (what ``amesh listen`` / ``amesh invite`` write). The FastAPI and
Flask examples are served for real; ``examples/client.py`` runs as a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from authmesh.core._allowlist import Device
from authmesh.store import AmeshHome, create_identity, load_context, now_timestamp
from tests.sdk.harness import DEADLINE_SECONDS, uvicorn_server, wsgi_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _pair(target: AmeshHome, controller: AmeshHome, protocol: int) -> None:
    """Record each side in the other's allow list, as pairing does."""
    contexts = {home: load_context(home, environ={}) for home in (target, controller)}
    for home, peer, role in ((target, controller, "controller"), (controller, target, "target")):
        identity = contexts[peer].identity
        device = Device.new(
            device_id=identity.device_id,
            public_key=identity.public_key,
            friendly_name=identity.friendly_name,
            role=role,
            added_at=now_timestamp(),
            protocol=protocol,
        )
        contexts[home].allow_list.add(device)


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def homes(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Path]]:
    for name in ("AUTH_MESH_PASSPHRASE", "AMESH_PASSPHRASE_FILE", "AMESH_DIR"):
        monkeypatch.delenv(name, raising=False)
    server, client = AmeshHome(tmp_path / "server"), AmeshHome(tmp_path / "client")
    for home, name in ((server, "orders-api"), (client, "billing-job")):
        create_identity(name, backend="encrypted-file", home=home, environ={})
    _pair(server, client, request.param)
    monkeypatch.setenv("AUTH_MESH_DIR", str(server.root))
    yield server.root, client.root


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_client(url: str, client_home: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "AUTH_MESH_DIR": str(client_home), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "client.py"), url],
        env=environment,
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS * 3,
    )


def test_fastapi_example_with_client_script(homes: tuple[Path, Path]) -> None:
    _, client_home = homes
    app = _load_example("fastapi_service").app
    with uvicorn_server(app) as port:
        result = _run_client(f"http://127.0.0.1:{port}/orders", client_home)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE_SECONDS).text
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200 ") and '"from":"billing-job"' in result.stdout
    assert 'authmesh_verifications_total{outcome="accepted"} 1.0' in metrics


def test_flask_example_with_client_script(homes: tuple[Path, Path]) -> None:
    _, client_home = homes
    app = _load_example("flask_service").app
    with wsgi_server(app) as port:
        result = _run_client(f"http://127.0.0.1:{port}/orders", client_home)
        refused = _run_client(f"http://127.0.0.1:{port}/orders", Path("/nonexistent/amesh"))
    assert result.returncode == 0, result.stderr
    assert '"from":"billing-job"' in result.stdout
    assert refused.returncode == 2 and refused.stderr.startswith("error: ")
    assert "Traceback" not in refused.stderr
