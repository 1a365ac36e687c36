"""``amesh listen`` + ``amesh invite``: pairing v3 (the default) end to end with the real CLI.

Through our relay, a two-instance cluster (target and controller on different instances) and
a stand-in for the reference relay that only forwards ``data`` frames; typos, version
mismatches in both directions, a declined controller; and, for v2, the relay attacks of
issue 10 (a forged acceptance, a claim that the peer cannot do better).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pexpect
import pytest
from websockets.asyncio.server import ServerConnection, serve

from authmesh.cli._exit_codes import ExitCode
from authmesh.core._keys import PrivateKey
from authmesh.pairing._errors import MESSAGES
from authmesh.pairing._v2 import V2Target
from tests.cli.test_pairing_e2e import PAIRING_CODE as SHORT_CODE
from tests.cli.test_pairing_e2e import SAS_LINE, finish
from tests.pairing.relays import (
    forwarding_relay,
    hostile_relay,
    in_thread,
    pake_impostor,
    receive,
    send,
)
from tests.support.cli import Device, fails_with
from tests.support.cluster import running_cluster
from tests.support.redisproc import RedisServer
from tests.support.relayproc import RelayProcess

V3_CODE = re.compile(rb"Pairing code: (\d{6}-\d{4}-\d{4})")


@pytest.fixture
def pair(make_device: Callable[..., Device]) -> tuple[Device, Device]:
    return make_device("Server"), make_device("Laptop")


def _listen(
    target: Device, relay: RelayProcess | str, children: list[pexpect.spawn], *flags: str
) -> tuple[pexpect.spawn, str]:
    listener = target.spawn("listen", *flags, relay=relay)
    children.append(listener)
    listener.expect(SHORT_CODE if flags else V3_CODE)
    return listener, listener.match.group(1).decode()


def _pair_v3(
    target: Device,
    controller: Device,
    children: list[pexpect.spawn],
    target_relay: RelayProcess | str,
    controller_relay: RelayProcess | str | None = None,
) -> None:
    listener, code = _listen(target, target_relay, children)
    listener.expect(f"amesh invite {code}")
    # Typed as people read it: groups separated by spaces, as separate arguments.
    inviter = controller.spawn("invite", *code.split("-"), relay=controller_relay or target_relay)
    children.append(inviter)
    inviter.expect("Target: Server")
    listener.expect("Controller: Laptop")
    listener.expect("is now a trusted controller of this device \\(pairing v3\\)")
    inviter.expect("added to the allow list as a target")
    assert finish(listener) == 0 and finish(inviter) == 0
    [on_target] = target.entries()
    [on_controller] = controller.entries()
    assert (on_target["deviceId"], on_target["role"]) == (controller.device_id, "controller")
    assert (on_controller["deviceId"], on_controller["role"]) == (target.device_id, "target")
    # A v3 peer is an authmesh peer: its requests and shell speak protocol 2.
    assert on_target["protocol"] == on_controller["protocol"] == 2


def test_v3_through_our_relay(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    _pair_v3(*pair, children, module_relay)


def test_v3_through_a_relay_that_only_forwards_data(
    pair: tuple[Device, Device], children: list
) -> None:
    with in_thread(forwarding_relay) as url:
        _pair_v3(*pair, children, url)


def test_v3_across_a_two_instance_cluster(
    pair: tuple[Device, Device], children: list, redis_server: RedisServer
) -> None:
    with running_cluster(redis_server, 2) as cluster:
        _pair_v3(*pair, children, cluster[0], cluster[1])


@pytest.mark.parametrize("group", [0, 2])
def test_a_typo_fails_on_both_sides_and_saves_nothing(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list, group: int
) -> None:
    target, controller = pair
    listener, code = _listen(target, module_relay, children)
    groups = code.split("-")
    if group == 0:  # a typo in the routing part: the relay knows no such code
        groups[0] = f"{(int(groups[0]) + 1) % 1_000_000:06d}"
    else:
        groups[2] = f"{(int(groups[2]) + 1) % 10_000:04d}"
    inviter = controller.spawn("invite", "-".join(groups), relay=module_relay)
    children.append(inviter)
    if group == 0:
        fails_with(inviter, MESSAGES["code_not_found"])
        listener.terminate(force=True)
    else:
        fails_with(inviter, MESSAGES["code_mismatch"])
        fails_with(listener, MESSAGES["code_mismatch"])
    assert target.entries() == [] and controller.entries() == []


def test_a_short_code_is_named(pair: tuple[Device, Device], module_relay: RelayProcess) -> None:
    _, controller = pair
    inviter = controller.spawn("invite", "123456", relay=module_relay)
    fails_with(inviter, MESSAGES["short_code"])


def test_v3_controller_meeting_a_v2_target(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    """Our relay refuses the mismatched connect; the v3 side names v2 and what it costs."""
    target, controller = pair
    listener, code = _listen(target, module_relay, children, "--v2")
    inviter = controller.spawn("invite", f"{code}-0000-0000", relay=module_relay)
    children.append(inviter)
    fails_with(inviter, MESSAGES["peer_is_v2"])
    listener.terminate(force=True)
    assert target.entries() == [] and controller.entries() == []


def test_v2_controller_meeting_a_v3_target(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    target, controller = pair
    listener, code = _listen(target, module_relay, children)
    inviter = controller.spawn("invite", "--v2", code.split("-")[0], relay=module_relay)
    children.append(inviter)
    fails_with(inviter, MESSAGES["peer_not_v2"])
    listener.terminate(force=True)


def test_a_declined_controller_is_told_and_nothing_is_saved(
    make_device: Callable[..., Device], module_relay: RelayProcess, children: list
) -> None:
    """At the controller limit the target asks (y/N); Enter declines, and the controller
    hears it through the sealed channel instead of waiting for a timeout."""
    target, first, second = make_device("Server"), make_device("Laptop"), make_device("Desktop")
    _pair_v3(target, first, children, module_relay)
    listener, code = _listen(target, module_relay, children)
    inviter = second.spawn("invite", code, relay=module_relay)
    children.append(inviter)
    listener.expect(r"Replace it with Desktop\? \(y/N\)")
    listener.sendline("")
    fails_with(
        listener,
        "This device already has the maximum number of controllers (1)",
        ExitCode.REFUSED,
    )
    fails_with(inviter, MESSAGES["peer_declined"])
    assert [d["deviceId"] for d in target.entries()] == [first.device_id]
    assert second.entries() == []


def test_a_relay_running_its_own_exchanges_fails_on_both_screens(
    pair: tuple[Device, Device], children: list
) -> None:
    target, controller = pair
    learnt: dict[str, object] = {}
    with in_thread(lambda: hostile_relay(pake_impostor(learnt), protocol=None)) as url:
        listener, code = _listen(target, url, children)
        inviter = controller.spawn("invite", code, relay=url)
        children.append(inviter)
        fails_with(inviter, MESSAGES["code_mismatch"])
        fails_with(listener, MESSAGES["code_mismatch"])
    assert target.entries() == [] and controller.entries() == []
    assert learnt == {"toward_target": "code_mismatch", "toward_controller": "code_mismatch"}


# ---------------------------------------------------------------- v2 under a hostile relay


def _v2_impostor(forge_acceptance: bool) -> Callable[[], Any]:
    """A relay that plays the target itself (key of its own, name "srv-box") toward an
    ``invite --v2`` and, if asked, forges the target operator's acceptance."""

    def relay() -> Any:
        async def handler(socket: ServerConnection) -> None:
            connect = await receive(socket)
            await send(socket, {"type": "peer_found", "protocol": 2})
            impostor = V2Target(PrivateKey.generate(), "srv-box", connect["otc"])
            await send(socket, impostor.on_commit(await receive(socket)))
            impostor.on_reveal(await receive(socket))
            _, identity = impostor.on_controller_identity(await receive(socket))
            await send(socket, identity)
            if forge_acceptance:
                await send(socket, impostor.confirm_frame(True))
            await socket.wait_closed()

        return _served(handler)

    return relay


@asynccontextmanager
async def _served(handler: Callable[[ServerConnection], Any]) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


@pytest.fixture
def impostor_relay(request: pytest.FixtureRequest) -> Iterator[str]:
    with in_thread(_v2_impostor(forge_acceptance=request.param)) as url:
        yield url


@pytest.mark.parametrize("impostor_relay", [True], indirect=True)
def test_v2_forged_acceptance_is_not_saved_by_default(
    pair: tuple[Device, Device], impostor_relay: str, children: list
) -> None:
    """Issue 10 item 7, reproduced: before, the controller saved the relay's key as target
    "srv-box" a second after showing the code. Now v2 asks its operator first."""
    _, controller = pair
    inviter = controller.spawn("invite", "--v2", "482913", relay=impostor_relay)
    children.append(inviter)
    inviter.expect(SAS_LINE)
    inviter.expect(r"Does srv-box say this machine is now a trusted controller\? \(y/N\)")
    inviter.sendline("")  # the operator looks at the target: it never said so
    fails_with(inviter, MESSAGES["operator_declined"])
    assert controller.entries() == []


@pytest.mark.parametrize("impostor_relay", [True], indirect=True)
def test_v2_no_confirm_is_the_documented_risk(
    pair: tuple[Device, Device], impostor_relay: str, children: list
) -> None:
    _, controller = pair
    inviter = controller.spawn("invite", "--v2", "--no-confirm", "482913", relay=impostor_relay)
    children.append(inviter)
    inviter.expect("added to the allow list as a target")
    assert finish(inviter) == 0
    assert [d["friendlyName"] for d in controller.entries()] == ["srv-box"]


def test_downgrade_messages_warn_instead_of_advising() -> None:
    """Issue 10 item 8: no message sends the operator to legacy pairing without saying that
    a hostile relay can then impersonate either machine and that only a relay they run is
    safe, and how to check."""
    for code, message in MESSAGES.items():
        if "--legacy" in message and "without --legacy" not in message:
            assert "hostile relay" in message, code
            assert "relay you run" in message, code
            assert "AMESH_RELAY_URL" in message, code
        assert "rerun with --legacy" not in message, code
