"""The world the doc blocks run in: a relay, two paired homes, a protected service."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmesh.store._context import create_identity
from authmesh.store._home import AmeshHome
from tests.docs.codeblocks import ROOT
from tests.support.docs import DocsWorld, answers, clean_environ, pair
from tests.support.relayproc import free_port, start_relay, wait_until


@pytest.fixture(scope="package")
def world() -> Iterator[DocsWorld]:
    scratch = Path(tempfile.mkdtemp(prefix="amdocs"))
    server, worker = AmeshHome(scratch / "server"), AmeshHome(scratch / "worker")
    for home, name in ((server, "api-server"), (worker, "worker")):
        home.root.mkdir(mode=0o700)
        create_identity(name, backend="encrypted-file", home=home, environ={})
    pair(server, worker)
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
        wait_until(lambda: answers(url), 30, "the example service to start")
        yield DocsWorld(relay, server.root, worker.root, url, scratch)
    finally:
        service.terminate()
        service.wait(10)
        relay.stop()
        shutil.rmtree(scratch, ignore_errors=True)
