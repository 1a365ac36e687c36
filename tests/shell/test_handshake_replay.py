"""Our session-level handshake against the reference's recorded handshakes, byte for byte.

``shell.json`` ``handshake_transcripts`` holds what a reference agent and a reference controller
sent each other with pinned RNG and clock. Each side of ours is run against the other side's
recorded messages (through a channel that replays them): with the same ephemeral key, nonce and
clock it must send exactly the recorded JSON texts and derive the recorded session key, or
refuse for the recorded reason. The primitives are checked on the same vectors in
tests/conformance/test_shell_vectors.py; this checks the order and content of what
:mod:`authmesh.shell._handshake` puts on the wire.

The re-encrypting relay transcript is left to that test: what each side *received* there is
not in the recording (only what was sent), so it cannot be replayed at this level.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import pytest

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET
from authmesh.core._b64 import b64decode
from authmesh.core._keys import PrivateKey
from authmesh.core.shell._handshake import ShellHandshakeError, parse_timestamp
from authmesh.shell._channel import receive_data
from authmesh.shell._handshake import run_controller_handshake, run_target_handshake
from tests.conformance.ledger import record
from tests.shell import handshake_vectors as vectors
from tests.shell.handshake_vectors import parties
from tests.support.vectorfiles import section

FILE = "shell.json"
SECTION = "handshake_transcripts.transcripts"
_REPLAYABLE = [t for t in section(FILE, SECTION) if "mitm" not in t]


class ReplayChannel:
    """Hands out the peer's recorded messages and keeps what we send."""

    def __init__(self, recorded: list[str]) -> None:
        self._incoming = deque(json.loads(text) for text in recorded)
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        if not self._incoming:
            raise TimeoutError  # the recorded peer said nothing more
        return self._incoming.popleft()


def _wire(transcript: dict[str, Any], side: str) -> list[str]:
    return [step["json"] for step in transcript["wire_as_sent"] if step["from"] == side]


def _outcome(handshake: Coroutine[Any, Any, Any], expected: dict[str, Any]) -> Any:
    """Run our side; where the reference side failed, ours fails with the same error (None)."""
    if "error" not in expected:
        return asyncio.run(handshake)
    with pytest.raises(ShellHandshakeError) as refused:
        asyncio.run(handshake)
    assert refused.value.code is vectors.REFERENCE_ERRORS[expected["error"]]
    return None


@pytest.mark.parametrize("transcript", _REPLAYABLE, ids=lambda t: t["name"])
def test_our_agent_replays_the_reference_agent(transcript: dict[str, Any]) -> None:
    (agent_key, agent_name), (controller_key, controller_name) = parties()
    allow_list = vectors.allow_list(
        controller_key, controller_name, vectors.agent_grant(transcript["name"])
    )
    moment = parse_timestamp(transcript["fixed_clock"])
    moment += timedelta(milliseconds=transcript["agent_clock_offset_ms"])
    rng = transcript["rng"]
    channel = ReplayChannel(_wire(transcript, "controller"))
    run = run_target_handshake(
        channel,
        signer=agent_key,
        friendly_name=agent_name,
        allow_list=lambda: allow_list,
        clock=lambda: moment,
        ephemeral=PrivateKey.from_scalar(bytes.fromhex(rng["agent_ephemeral_private_hex"])),
        envelope_nonce=bytes.fromhex(rng["agent_envelope_nonce_hex"]),
    )
    expected = transcript["agent_result"]
    if (established := _outcome(run, expected)) is not None:
        assert established.peer.device_id == expected["peer_device_id"]
        assert established.peer.friendly_name == expected["peer_friendly_name"]
        assert established.term is None  # reference controllers send no TERM
        assert established.cipher.role.name == "TARGET"
    assert channel.sent == _wire(transcript, "agent")  # byte-exact, nothing more
    record(FILE, SECTION, transcript["name"])


@pytest.mark.parametrize("transcript", _REPLAYABLE, ids=lambda t: t["name"])
def test_our_controller_replays_the_reference_controller(transcript: dict[str, Any]) -> None:
    (agent_key, agent_name), (controller_key, controller_name) = parties()
    allow_list = vectors.allow_list(
        agent_key, agent_name, vectors.controller_grant(transcript["name"])
    )
    requested = vectors.entry(agent_key, agent_name, ROLE_TARGET)
    moment = parse_timestamp(transcript["fixed_clock"])
    rng = transcript["rng"]
    channel = ReplayChannel(_wire(transcript, "agent"))
    run = run_controller_handshake(
        channel,
        signer=controller_key,
        friendly_name=controller_name,
        target=requested,
        allow_list=lambda: allow_list,
        term=None,
        clock=lambda: moment,
        ephemeral=PrivateKey.from_scalar(bytes.fromhex(rng["controller_ephemeral_private_hex"])),
        envelope_nonce=bytes.fromhex(rng["controller_envelope_nonce_hex"]),
    )
    expected = transcript["controller_result"]
    if expected.get("error") == "reader_disposed":  # the agent refused: it never answers
        with pytest.raises(TimeoutError):
            asyncio.run(run)
    elif (established := _outcome(run, expected)) is not None:
        assert established.peer.device_id == expected["peer_device_id"]
        assert established.cipher.role.name == "CONTROLLER"
    assert channel.sent == _wire(transcript, "controller")
    record(FILE, SECTION, transcript["name"])


def test_our_target_opens_the_recorded_session_frames() -> None:
    """The key our agent derives is the reference's: a recorded controller frame opens."""
    transcript = next(t for t in _REPLAYABLE if t["name"] == "success")
    (agent_key, agent_name), (controller_key, controller_name) = parties()
    moment = parse_timestamp(transcript["fixed_clock"])
    rng = transcript["rng"]
    target_side = asyncio.run(
        run_target_handshake(
            ReplayChannel(_wire(transcript, "controller")),
            signer=agent_key,
            friendly_name=agent_name,
            allow_list=lambda: vectors.allow_list(
                controller_key, controller_name, (ROLE_CONTROLLER, True)
            ),
            clock=lambda: moment,
            ephemeral=PrivateKey.from_scalar(bytes.fromhex(rng["agent_ephemeral_private_hex"])),
            envelope_nonce=bytes.fromhex(rng["agent_envelope_nonce_hex"]),
        )
    )
    # The first recorded session frame (controller RESIZE 100x30) opens under our target key.
    first = json.loads(transcript["session_frames"][0]["json"])["payload"]
    assert target_side.cipher.decrypt(b64decode(first)) == b"\x02\x00\x64\x00\x1e"


def test_frames_the_reference_agent_streams_during_verification_are_kept() -> None:
    """W2: the reference agent sends its prompt right after its envelope; nothing is lost."""
    transcript = next(t for t in _REPLAYABLE if t["name"] == "success")
    (agent_key, agent_name), (controller_key, controller_name) = parties()
    agent_frames = [f["json"] for f in transcript["session_frames"] if f["from"] == "agent"]
    channel = ReplayChannel(_wire(transcript, "agent") + agent_frames)
    requested = vectors.entry(agent_key, agent_name, ROLE_TARGET)
    rng = transcript["rng"]
    established = asyncio.run(
        run_controller_handshake(
            channel,
            signer=controller_key,
            friendly_name=controller_name,
            target=requested,
            allow_list=lambda: vectors.allow_list(agent_key, agent_name, (ROLE_TARGET, None)),
            term=None,
            clock=lambda: parse_timestamp(transcript["fixed_clock"]),
            ephemeral=PrivateKey.from_scalar(
                bytes.fromhex(rng["controller_ephemeral_private_hex"])
            ),
            envelope_nonce=bytes.fromhex(rng["controller_envelope_nonce_hex"]),
        )
    )

    async def session_frames() -> list[bytes]:
        return [established.cipher.decrypt(await receive_data(channel, 1)) for _ in agent_frames]

    assert asyncio.run(session_frames()) == [
        b"\x01$ ",
        b"\x01exit 7\r\n",
        b"\x05",
        b"\x03\x00\x00\x00\x07",
    ]
