"""Every adapter takes an in-band rotation, acknowledges it and then refuses the old key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import Depends, FastAPI

from authmesh.core._keys import PrivateKey
from authmesh.core._rotation import create_statement, encode_chain, key_seq
from authmesh.sdk._client import AuthMeshAuth
from authmesh.sdk._rotation import ACK_HEADER, ROTATION_HEADER
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import VerifiedDevice, Verifier
from authmesh.sdk.fastapi import AuthMeshDependency
from tests.sdk.harness import uvicorn_server
from tests.support.sdk import trusted_store


def _get(port: int, key: PrivateKey, chain: str | None = None) -> httpx.Response:
    headers = {ROTATION_HEADER: chain} if chain else {}
    auth = AuthMeshAuth(RequestSigner(key))
    return httpx.get(f"http://127.0.0.1:{port}/orders", auth=auth, headers=headers, timeout=30)


def test_each_adapter_applies_and_acknowledges_a_rotation(
    adapter: tuple[str, Any, int], tmp_path: Path
) -> None:
    _, dispatcher, port = adapter
    old, new = PrivateKey.generate(), PrivateKey.generate()
    store = trusted_store(tmp_path / "home", [(old, "controller", 1)])
    dispatcher.use(Verifier(store, allow_list_recheck_seconds=0))
    chain = encode_chain([create_statement(old, new, 1, int(time.time()))])

    assert _get(port, new).status_code == 401  # no statement: an unknown key
    response = _get(port, new, chain)
    assert response.status_code == 200, response.text
    assert response.headers[ACK_HEADER] == "1"
    [entry] = store.read().devices
    assert entry.public_key == new.public_key_b64 and key_seq(entry) == 1
    assert ACK_HEADER not in _get(port, new).headers  # no chain sent: nothing to acknowledge
    assert _get(port, old).status_code == 401
    assert _get(port, old, chain).status_code == 401


def test_the_fastapi_dependency_acknowledges_a_rotation(tmp_path: Path) -> None:
    """Without an acknowledgement the client attaches its chain to every request forever."""
    app = FastAPI()
    old, new = PrivateKey.generate(), PrivateKey.generate()
    store = trusted_store(tmp_path / "home", [(old, "controller", 1)])
    require_device = AuthMeshDependency(Verifier(store, allow_list_recheck_seconds=0))

    @app.get("/orders")
    async def orders(device: VerifiedDevice = Depends(require_device)) -> Any:  # noqa: B008
        return {"device": device.device_id}

    chain = encode_chain([create_statement(old, new, 1, int(time.time()))])
    with uvicorn_server(app) as port:
        response = _get(port, new, chain)
        assert response.status_code == 200, response.text
        assert response.headers[ACK_HEADER] == "1"
        assert ACK_HEADER not in _get(port, new).headers
