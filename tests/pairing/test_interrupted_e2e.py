"""Peers and relays that die mid-handshake: each side ends in a clear error, never a hang."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

import pytest

from authmesh.core._keys import PrivateKey
from authmesh.pairing import (
    InviteOptions,
    ListenOptions,
    PairingError,
    PeerIdentity,
    invite,
    listen,
)
from tests.support.relayproc import RelayProcess

STEP = 15.0
PROTOCOLS = {"legacy": 1, "v2": 2, "v3": 3}

# A peer in its own process, so the test can SIGKILL it. It prints the pairing code (target)
# or the SAS (controller) and then keeps going.
PEER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from authmesh.core._keys import PrivateKey
    from authmesh.pairing import InviteOptions, ListenOptions, invite, listen

    role, url, protocol = sys.argv[1], sys.argv[2], {"legacy": 1, "v2": 2, "v3": 3}[sys.argv[3]]

    async def main():
        key = PrivateKey.generate()
        if role == "target":
            await listen(key, "doomed-target", ListenOptions(
                relay_url=url, protocol=protocol,
                on_code=lambda code, _: print(code, flush=True),
                ask_sas=lambda peer: asyncio.sleep(3600)))
        else:
            await invite(sys.argv[4], key, "doomed-controller", InviteOptions(
                relay_url=url, protocol=protocol,
                show_sas=lambda sas, peer: print(sas, flush=True)))

    asyncio.run(main())
    """
)


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", PEER_SCRIPT, *args, stdout=asyncio.subprocess.PIPE
    )


async def _line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    return (await asyncio.wait_for(process.stdout.readline(), STEP)).decode().strip()


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)


@pytest.mark.parametrize("mode", ["v3", "v2", "legacy"])
async def test_target_killed_after_peer_found(fresh_relay: RelayProcess, mode: str) -> None:
    target = await _spawn("target", fresh_relay.url, mode)
    try:
        code = await _line(target)
        with pytest.raises(PairingError) as raised:
            await asyncio.wait_for(
                invite(
                    code,
                    PrivateKey.generate(),
                    "survivor",
                    InviteOptions(
                        relay_url=fresh_relay.url,
                        protocol=PROTOCOLS[mode],
                        on_peer_found=lambda: _kill(target),
                        show_sas=lambda sas, peer: None,
                    ),
                ),
                STEP,
            )
        # v3: a peer gone before its PAKE message may be one that does not speak v3.
        expected = "peer_left_before_v3" if mode == "v3" else "peer_disconnected"
        assert raised.value.code == expected
    finally:
        _kill(target)
        await target.wait()


async def test_controller_killed_while_the_code_is_typed(fresh_relay: RelayProcess) -> None:
    controllers: list[asyncio.subprocess.Process] = []

    async def on_code(code: str, lifetime: float) -> None:
        controllers.append(await _spawn("controller", fresh_relay.url, "v2", code))

    async def operator(peer: PeerIdentity) -> str:
        sas = await _line(controllers[0])
        _kill(controllers[0])
        await controllers[0].wait()
        return sas

    try:
        with pytest.raises(PairingError) as raised:
            await asyncio.wait_for(
                listen(
                    PrivateKey.generate(),
                    "survivor",
                    ListenOptions(
                        relay_url=fresh_relay.url, protocol=2, on_code=on_code, ask_sas=operator
                    ),
                ),
                2 * STEP,
            )
        assert raised.value.code in {"peer_disconnected", "relay_closed"}
    finally:
        for process in controllers:
            _kill(process)
            await process.wait()


@pytest.mark.parametrize("legacy", [False, True])
async def test_relay_killed_mid_handshake(fresh_relay: RelayProcess, legacy: bool) -> None:
    code_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    shown: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def kill_relay_after_sas(sas: str, peer: PeerIdentity) -> None:
        fresh_relay.kill()
        shown.set_result(sas)

    listening = asyncio.create_task(
        listen(
            PrivateKey.generate(),
            "target",
            ListenOptions(
                relay_url=fresh_relay.url,
                protocol=1 if legacy else 2,
                on_code=lambda code, _: code_ready.set_result(code),
                ask_sas=lambda peer: asyncio.wait_for(shown, STEP),
            ),
        )
    )
    code = await asyncio.wait_for(code_ready, STEP)
    inviting = asyncio.create_task(
        invite(
            code,
            PrivateKey.generate(),
            "controller",
            InviteOptions(
                relay_url=fresh_relay.url,
                protocol=1 if legacy else 2,
                show_sas=kill_relay_after_sas if not legacy else lambda sas, peer: None,
                on_peer_found=fresh_relay.kill if legacy else None,
            ),
        )
    )
    target_result, controller_result = await asyncio.wait_for(
        asyncio.gather(listening, inviting, return_exceptions=True), 2 * STEP
    )
    assert isinstance(target_result, PairingError), target_result
    assert isinstance(controller_result, PairingError), controller_result
    assert target_result.code == "relay_closed"
    assert controller_result.code == ("relay_closed" if legacy else "no_confirmation")
