"""``amesh provision`` never reports a target that did not finish (issue 13).

A stand-in relay forwards bootstrap messages as the reference relay does: the ack reaches the
target without ``controllerSig``, so the target cannot verify it and never finishes. The
controller must then record nothing and fail, instead of recording the target and exiting 0.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pexpect
import pytest
from websockets.asyncio.server import ServerConnection, serve

from authmesh.cli._exit_codes import ExitCode
from authmesh.core._keys import PrivateKey
from authmesh.pairing import PairingError, bootstrap, issue_token
from tests.support.cli import CLI, STEP_TIMEOUT, AmeshRunner, Device
from tests.support.pairing import start_watching

STEP = 10.0


class SignatureDroppingRelay:
    """Bootstrap routing only, forwarding what the reference relay forwards (pairing.md §2):
    the ack loses ``controllerSig``. ``keep_proof`` also forwards the v2 init fields, as an
    authmesh relay would, so a v2 target gets through to the ack."""

    def __init__(self, keep_proof: bool = False) -> None:
        self.keep_proof = keep_proof
        self.watchers: dict[str, ServerConnection] = {}
        self.targets: dict[str, ServerConnection] = {}
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _handle(self, socket: ServerConnection) -> None:
        async for raw in socket:
            message: dict[str, Any] = json.loads(raw)
            kind, jti = message.get("type"), str(message.get("jti"))
            if kind == "bootstrap_watch":
                self.watchers[jti] = socket
                await socket.send(json.dumps({"type": "bootstrap_watching", "jti": jti}))
            elif kind == "bootstrap_init":
                watcher = self.watchers.get(jti)
                if watcher is None:
                    await socket.send(
                        json.dumps({"type": "bootstrap_reject", "error": "no_watcher"})
                    )
                    continue
                self.targets[jti] = socket
                fields = ["token", "targetPubKey"]
                fields += ["targetSig", "protocol"] if self.keep_proof else []
                forwarded = {name: message[name] for name in fields if name in message}
                await watcher.send(json.dumps({"type": "bootstrap_init", "jti": jti, **forwarded}))
            elif kind in ("bootstrap_ack", "bootstrap_reject"):
                self.watchers.pop(jti, None)
                target = self.targets.pop(jti, None)
                if target is not None:
                    await target.send(
                        json.dumps(
                            {"type": kind, "jti": jti, "controllerPubKey": message.get("publicKey")}
                        )
                    )

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/ws"
            self._ready.set()
            await self._stop

    def __enter__(self) -> SignatureDroppingRelay:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(STEP)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(STEP)


@pytest.fixture
def dropping_relay() -> Iterator[SignatureDroppingRelay]:
    with SignatureDroppingRelay() as relay:
        yield relay


def start_provision(controller: Device, relay_url: str, *, terminal: bool) -> pexpect.spawn:
    command = [*CLI, "provision", "--name", "legacy-box", "--allow-legacy-target", "--json"]
    if not terminal:  # output on the pty, input from /dev/null: no operator to ask
        command = ["/bin/sh", "-c", 'exec "$@" < /dev/null', "sh", *command]
    child = pexpect.spawn(
        command[0],
        command[1:],
        env={**controller.env, "AMESH_RELAY_URL": relay_url, "TERM": "dumb"},
        timeout=STEP_TIMEOUT,
    )
    child.expect(rb'"token": "([^"]+)"')
    token = child.match.group(1).decode()
    child.expect("Waiting for the target")
    child.token = token  # type: ignore[attr-defined]
    return child


def run_legacy_target(token: str) -> PairingError:
    """A reference-style target (token, no proof): it cannot verify the stripped ack."""
    with pytest.raises(PairingError) as failed:
        asyncio.run(asyncio.wait_for(bootstrap(token, PrivateKey.generate(), legacy=True), STEP))
    return failed.value


def test_legacy_target_without_a_terminal_is_not_recorded(
    amesh: AmeshRunner, make_device: Any, dropping_relay: SignatureDroppingRelay
) -> None:
    controller = make_device("Controller")
    child = start_provision(controller, dropping_relay.url, terminal=False)
    assert run_legacy_target(child.token).code == "invalid_controller_signature"
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == ExitCode.REFUSED
    assert b"nothing was recorded here" in (child.before or b"")
    assert json.loads(amesh(["list", "--json"], controller.home).stdout)["devices"] == []


def test_legacy_target_is_recorded_only_when_the_operator_confirms(
    amesh: AmeshRunner, make_device: Any, dropping_relay: SignatureDroppingRelay
) -> None:
    controller = make_device("Controller")
    child = start_provision(controller, dropping_relay.url, terminal=True)
    run_legacy_target(child.token)
    child.expect("Does it report that bootstrap succeeded")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == ExitCode.REFUSED
    assert json.loads(amesh(["list", "--json"], controller.home).stdout)["devices"] == []


async def test_v2_target_that_never_got_the_signature_is_not_recorded() -> None:
    """The v2 target fails on the stripped ack and sends no receipt: nothing is recorded."""
    controller_key = PrivateKey.generate()
    with SignatureDroppingRelay(keep_proof=True) as relay:
        issued = issue_token(controller_key, name="edge", relay_url=relay.url, ttl_seconds=600)
        watcher, accepted = await start_watching(controller_key, issued, receipt_timeout=3)
        with pytest.raises(PairingError) as target_failed:
            await asyncio.wait_for(bootstrap(issued.token, PrivateKey.generate()), STEP)
        assert target_failed.value.code == "invalid_controller_signature"
        with pytest.raises(PairingError) as controller_failed:
            await asyncio.wait_for(watcher, STEP)
    assert controller_failed.value.code == "not_confirmed"
    assert accepted == []
