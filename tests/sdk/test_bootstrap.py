"""``bootstrap_if_needed`` end to end: a real relay, a real controller, real homes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from authmesh.core._allowlist import ROLE_TARGET, Device
from authmesh.pairing import BootstrapResult, PairingError, issue_token, provision
from authmesh.sdk._bootstrap import bootstrap_if_needed, bootstrap_if_needed_async
from authmesh.sdk._client import AuthMeshAuth
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.store import AmeshHome, StoreError, create_identity, load_context, now_timestamp
from tests.sdk.harness import uvicorn_server
from tests.support.relayproc import RelayProcess

NO_ENV: dict[str, str] = {}


@pytest.fixture
def relay_url(fresh_relay: RelayProcess) -> str:
    """The URL of a real relay process for this test (``tests/conftest.py``)."""
    return fresh_relay.url


def _controller(tmp_path: Path) -> AmeshHome:
    home = AmeshHome(tmp_path / "controller")
    create_identity("controller-host", backend="encrypted-file", home=home, environ=NO_ENV)
    return home


async def _provision_and_bootstrap(
    controller: AmeshHome, target: AmeshHome, relay_url: str, *, legacy: bool
) -> bool:
    context = load_context(controller, NO_ENV)
    issued = issue_token(context.signer, name="worker-7", relay_url=relay_url)
    watching = asyncio.Event()

    def record_target(result: BootstrapResult) -> None:
        context.allow_list.add(
            Device.new(
                device_id=result.peer_device_id,
                public_key=result.peer_public_key_b64,
                friendly_name=result.name,
                role=ROLE_TARGET,
                added_at=now_timestamp(),
                protocol=result.protocol,
            )
        )

    controller_side = asyncio.create_task(
        provision(
            context.signer,
            issued,
            accept_target=record_target,
            on_watching=watching.set,
            allow_legacy_target=legacy,
        )
    )
    await asyncio.wait_for(watching.wait(), 10)
    done = await bootstrap_if_needed_async(
        token=issued.token, home=target.root, legacy=legacy, environ=NO_ENV
    )
    await asyncio.wait_for(controller_side, 10)
    return done


@pytest.mark.parametrize("legacy", [False, True], ids=["v2", "legacy"])
async def test_bootstrap_then_the_controller_calls_the_target(
    relay_url: str, tmp_path: Path, legacy: bool
) -> None:
    controller, target = _controller(tmp_path), AmeshHome(tmp_path / "target")
    assert await _provision_and_bootstrap(controller, target, relay_url, legacy=legacy)
    target_context = load_context(target, NO_ENV)
    assert target_context.identity.friendly_name == "worker-7"
    (entry,) = target_context.allow_list.snapshot().devices
    controller_identity = load_context(controller, NO_ENV).identity
    assert (entry.device_id, entry.role) == (controller_identity.device_id, "controller")
    assert entry.protocol == (1 if legacy else 2)

    # The controller can now call a service protected by the new machine's identity.
    app = AuthMeshMiddleware(_ok, verifier=Verifier(target_context.allow_list))
    auth = AuthMeshAuth.from_home(controller.root)
    with uvicorn_server(app) as port:
        response = await asyncio.to_thread(
            httpx.get, f"http://127.0.0.1:{port}/hello", auth=auth, timeout=10
        )
    assert response.status_code == 200
    # Second start: the identity exists, nothing happens (the token is ignored).
    assert not await bootstrap_if_needed_async(token="ignored", home=target.root, environ=NO_ENV)


async def _ok(scope: object, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


async def test_failed_bootstrap_leaves_no_identity(relay_url: str, tmp_path: Path) -> None:
    controller, target = _controller(tmp_path), AmeshHome(tmp_path / "target")
    context = load_context(controller, NO_ENV)
    issued = issue_token(context.signer, name="worker-8", relay_url=relay_url)
    # Nobody watches this token: the relay refuses the init, or the wait times out.
    with pytest.raises(PairingError):
        await bootstrap_if_needed_async(
            token=issued.token, home=target.root, timeout_seconds=2, environ=NO_ENV
        )
    assert not target.identity_file.exists()
    assert not list(target.keys_dir.glob("*.key.json"))


def test_without_identity_or_token_the_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        bootstrap_if_needed(home=tmp_path / "empty", environ=NO_ENV)
    assert "AMESH_BOOTSTRAP_TOKEN" in str(caught.value)
    with pytest.raises(PairingError) as bad:
        bootstrap_if_needed(token="not-a-token", home=tmp_path / "empty", environ=NO_ENV)
    assert bad.value.code == "invalid_token_format"
    assert not (tmp_path / "empty" / "identity.json").exists()
