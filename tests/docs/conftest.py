"""The world the doc blocks run in: a relay, two paired homes, a protected service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from authmesh.core.allowlist import Device
from authmesh.store.allowlist_store import now_timestamp
from authmesh.store.context import create_identity, load_context
from authmesh.store.home import AmeshHome
from tests.docs.codeblocks import ROOT
from tests.support.relayproc import RelayProcess, free_port, start_relay, wait_until


@dataclass
class DocsWorld:
    """What the doc blocks run against: a relay, two paired homes, a protected service."""

    relay: RelayProcess
    server_home: Path
    worker_home: Path
    service_url: str
    scratch: Path


def _pair(target: AmeshHome, controller: AmeshHome) -> None:
    """Record each machine in the other's allow list, as `amesh listen`/`invite` would."""
    target_context, controller_context = load_context(target, {}), load_context(controller, {})
    for context, peer, role in (
        (target_context, controller_context, "controller"),
        (controller_context, target_context, "target"),
    ):
        context.allow_list.upsert(
            Device.new(
                device_id=peer.identity.device_id,
                public_key=peer.identity.public_key,
                friendly_name=peer.identity.friendly_name,
                role=role,
                added_at=now_timestamp(),
                protocol=2,
            )
        )


def clean_environ() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AMESH_", "AUTH_MESH_", "AMESH"))
    }


@pytest.fixture(scope="package")
def world() -> Iterator[DocsWorld]:
    scratch = Path(tempfile.mkdtemp(prefix="amdocs"))
    server, worker = AmeshHome(scratch / "server"), AmeshHome(scratch / "worker")
    for home, name in ((server, "api-server"), (worker, "worker")):
        home.root.mkdir(mode=0o700)
        create_identity(name, backend="encrypted-file", home=home, environ={})
    _pair(server, worker)
    relay = start_relay()
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_service:app", "--port", str(port)],
        cwd=ROOT,
        env={**clean_environ(), "AUTH_MESH_DIR": str(server.root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), 30, "the example service to start")
        yield DocsWorld(relay, server.root, worker.root, url, scratch)
    finally:
        service.terminate()
        service.wait(10)
        relay.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
