"""provision/bootstrap end to end through a real relay process."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from authmesh.core._keys import PrivateKey
from authmesh.pairing import (
    BootstrapResult,
    PairingError,
    bootstrap,
    check_token,
    issue_token,
    provision,
)
from authmesh.pairing._relay_client import RelayConnection
from tests.support.pairing import start_watching
from tests.support.relayproc import RelayFactory, RelayProcess

STEP = 10.0


async def test_v2_bootstrap_then_replay_fails(
    fresh_relay: RelayProcess, controller_key: PrivateKey, target_key: PrivateKey
) -> None:
    issued = issue_token(controller_key, name="edge-1", relay_url=fresh_relay.url, ttl_seconds=600)
    watcher, accepted = await start_watching(controller_key, issued)
    target_side = await asyncio.wait_for(bootstrap(issued.token, target_key), STEP)
    controller_side = await asyncio.wait_for(watcher, STEP)

    assert target_side.peer_public_key == controller_key.public_key
    assert target_side.peer_role == "controller" and target_side.name == "edge-1"
    assert target_side.peer_device_id == controller_key.device_id
    assert controller_side.peer_public_key == target_key.public_key
    assert controller_side.peer_role == "target" and controller_side.protocol == 2
    assert accepted == [controller_side]

    # Single use: the relay burned the jti, and nobody watches it any more.
    with pytest.raises(PairingError) as replay:
        await asyncio.wait_for(bootstrap(issued.token, PrivateKey.generate()), STEP)
    assert replay.value.code == "token_already_used"


async def test_legacy_sdk_target_needs_explicit_opt_in(
    fresh_relay: RelayProcess, controller_key: PrivateKey, target_key: PrivateKey
) -> None:
    """A reference SDK target sends the bearer token and no proof of key (W3)."""
    issued = issue_token(controller_key, name="sdk-box", relay_url=fresh_relay.url, ttl_seconds=600)
    watcher, accepted = await start_watching(controller_key, issued)
    with pytest.raises(PairingError) as refused:
        await asyncio.wait_for(bootstrap(issued.token, target_key, legacy=True), STEP)
    assert refused.value.code == "target_proof_required"
    with pytest.raises(PairingError):
        await asyncio.wait_for(watcher, STEP)
    assert accepted == []

    issued = issue_token(controller_key, name="sdk-box", relay_url=fresh_relay.url, ttl_seconds=600)
    watcher, accepted = await start_watching(controller_key, issued, allow_legacy_target=True)
    target_side = await asyncio.wait_for(bootstrap(issued.token, target_key, legacy=True), STEP)
    controller_side = await asyncio.wait_for(watcher, STEP)
    assert controller_side.protocol == target_side.protocol == 1
    assert controller_side.peer_public_key == target_key.public_key


async def test_no_watcher_is_a_clear_error(
    fresh_relay: RelayProcess, controller_key: PrivateKey, target_key: PrivateKey
) -> None:
    issued = issue_token(controller_key, name="x", relay_url=fresh_relay.url, ttl_seconds=600)
    with pytest.raises(PairingError) as raised:
        await asyncio.wait_for(bootstrap(issued.token, target_key), STEP)
    assert raised.value.code == "no_watcher"
    assert "amesh provision" in str(raised.value)


async def test_controller_refusal_reaches_the_target(
    fresh_relay: RelayProcess, controller_key: PrivateKey, target_key: PrivateKey
) -> None:
    issued = issue_token(controller_key, name="x", relay_url=fresh_relay.url, ttl_seconds=600)

    def refuse(result: BootstrapResult) -> None:
        raise PairingError("operator_declined")

    watcher, _ = await start_watching(controller_key, issued, accept_target=refuse)
    with pytest.raises(PairingError) as raised:
        await asyncio.wait_for(bootstrap(issued.token, target_key), STEP)
    assert raised.value.code == "operator_declined"
    with pytest.raises(PairingError):
        await asyncio.wait_for(watcher, STEP)


async def test_relay_killed_while_target_waits(
    fresh_relay: RelayProcess, controller_key: PrivateKey, target_key: PrivateKey
) -> None:
    issued = issue_token(controller_key, name="x", relay_url=fresh_relay.url, ttl_seconds=600)
    async with await RelayConnection.open(fresh_relay.url) as watcher:
        await watcher.send({"type": "bootstrap_watch", "jti": issued.jti})
        assert (await watcher.receive(STEP))["type"] == "bootstrap_watching"
        target = asyncio.create_task(bootstrap(issued.token, target_key))
        assert (await watcher.receive(STEP))["type"] == "bootstrap_init"
        fresh_relay.kill()
        with pytest.raises(PairingError) as raised:
            await asyncio.wait_for(target, STEP)
    assert raised.value.code == "relay_closed"


def test_token_checked_before_any_io(controller_key: PrivateKey) -> None:
    """W3: the target refuses a bad token before it makes keys or contacts any relay."""
    issued = issue_token(
        controller_key, name="x", relay_url="ws://192.0.2.1:9/ws", ttl_seconds=60, now=1_000
    )
    with pytest.raises(PairingError) as expired:
        check_token(issued.token, now=2_000)
    assert expired.value.code == "token_expired"
    with pytest.raises(PairingError) as pinned:
        check_token(issued.token, now=1_000, expected_issuer=PrivateKey.generate().public_key)
    assert pinned.value.code == "invalid_signature"
    assert check_token(issued.token, now=1_000).jti == issued.jti


async def test_unreachable_relay_is_a_clear_error(
    controller_key: PrivateKey, target_key: PrivateKey
) -> None:
    issued = issue_token(controller_key, name="x", relay_url="ws://127.0.0.1:9/ws")
    started = time.monotonic()
    with pytest.raises(PairingError) as raised:
        await bootstrap(issued.token, target_key)
    assert raised.value.code == "relay_unreachable"
    assert time.monotonic() - started < STEP


async def test_watch_is_renewed_past_the_relay_watch_lifetime(
    controller_key: PrivateKey, target_key: PrivateKey, relay_factory: RelayFactory
) -> None:
    """The relay forgets a watch after AMESH_WATCHER_TTL; provision keeps renewing it."""
    short_lived = relay_factory({"AMESH_WATCHER_TTL": "1", "AMESH_SWEEP_INTERVAL": "0.1"})
    issued = issue_token(controller_key, name="late", relay_url=short_lived.url, ttl_seconds=600)
    watcher, accepted = await start_watching(controller_key, issued, rewatch_seconds=0.4)
    await asyncio.sleep(2.0)  # several watch lifetimes pass before the target shows up
    target_side = await asyncio.wait_for(bootstrap(issued.token, target_key), STEP)
    controller_side = await asyncio.wait_for(watcher, STEP)
    assert target_side.peer_public_key == controller_key.public_key
    assert accepted == [controller_side]


async def test_provision_gives_up_when_the_token_expires(
    fresh_relay: RelayProcess, controller_key: PrivateKey
) -> None:
    issued = issue_token(controller_key, name="never", relay_url=fresh_relay.url, ttl_seconds=60)
    # Half-way through the lifetime at the first look, past the end from then on.
    clock = itertools.chain([issued.issued_at + 30], itertools.repeat(issued.issued_at + 61))
    with pytest.raises(PairingError) as raised:
        await asyncio.wait_for(
            provision(controller_key, issued, rewatch_seconds=0.2, clock=lambda: next(clock)), STEP
        )
    assert raised.value.code == "provision_expired"
