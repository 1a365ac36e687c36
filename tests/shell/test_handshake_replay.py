"""Our session-level handshake against the reference's recorded handshakes, byte for byte.

``shell.json`` ``handshake_transcripts`` holds what a reference agent and a reference controller
sent each other with pinned RNG and clock. Each side of ours is run against the other side's
recorded messages (through a channel that replays them): with the same ephemeral key, nonce and
clock it must send exactly the recorded JSON texts and derive the recorded session key, or
refuse for the recorded reason. The primitives are checked on the same vectors in
tests/conformance/test_shell_vectors.py; this checks the order and content of what
:mod:`authmesh.shell.handshake` puts on the wire.

The re-encrypting relay transcript is left to that test: what each side *received* there is
not in the recording (only what was sent), so it cannot be replayed at this level.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from datetime import timedelta
from typing import Any

import pytest

from authmesh.core.allowlist import ROLE_CONTROLLER, ROLE_TARGET, AllowList, Device
from authmesh.core.b64 import b64decode
from authmesh.core.keys import PrivateKey
from authmesh.core.shell.handshake import HandshakeErrorCode, ShellHandshakeError, parse_timestamp
from authmesh.shell.channel import receive_data
from authmesh.shell.handshake import run_controller_handshake, run_target_handshake
from tests.conformance.ledger import record
from tests.vectorfiles import section

FILE = "shell.json"
SECTION = "handshake_transcripts.transcripts"
_REPLAYABLE = [t for t in section(FILE, SECTION) if "mitm" not in t]

# What the agent's allow list holds about the controller in each transcript: (role, shell).
_AGENT_KNOWS = {
    "agent_rejects_controller_without_shell_permission": (ROLE_CONTROLLER, False),
    "agent_rejects_controller_permissions_absent": (ROLE_CONTROLLER, None),
    "agent_rejects_peer_with_target_role": (ROLE_TARGET, None),
    "agent_rejects_unknown_controller": None,
}
# What the controller's allow list holds about the agent: its role, or None.
_CONTROLLER_KNOWS = {
    "controller_rejects_unknown_target": None,
    "controller_rejects_peer_with_controller_role": ROLE_CONTROLLER,
}
_ERRORS = {
    "Shell access not granted for this device": HandshakeErrorCode.SHELL_NOT_GRANTED,
    "Device is not a controller": HandshakeErrorCode.NOT_A_CONTROLLER,
    "Device not in allow list": HandshakeErrorCode.NOT_IN_ALLOW_LIST,
    "Device is not a target": HandshakeErrorCode.NOT_A_TARGET,
    "Peer identity timestamp out of range": HandshakeErrorCode.TIMESTAMP_OUT_OF_RANGE,
}


class ReplayChannel:
    """Hands out the peer's recorded messages and keeps what we send."""

    def __init__(self, recorded: list[str]) -> None:
        self._incoming = deque(json.loads(text) for text in recorded)
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def receive(self, timeout: float | None) -> dict[str, Any]:
        if not self._incoming:
            raise TimeoutError  # the recorded peer said nothing more
        return self._incoming.popleft()


def _identity(label: str) -> tuple[PrivateKey, str]:
    entry = next(i for i in section(FILE, "identities") if i["name"] == label)
    return PrivateKey.from_scalar(bytes.fromhex(entry["private_key_hex"])), entry["friendly_name"]


def _allow_list(peer: PrivateKey, name: str, role: str | None, shell: bool | None) -> AllowList:
    now = "2026-04-05T11:00:00.000Z"
    allow_list = AllowList.empty(now)
    if role is None:
        return allow_list
    device = Device.new(
        device_id=peer.device_id,
        public_key=peer.public_key_b64,
        friendly_name=name,
        role=role,
        added_at=now,
        shell=shell,
    )
    return allow_list.with_device(device, now)


def _wire(transcript: dict[str, Any], side: str) -> list[str]:
    return [step["json"] for step in transcript["wire_as_sent"] if step["from"] == side]


@pytest.mark.parametrize("transcript", _REPLAYABLE, ids=lambda t: t["name"])
def test_our_agent_replays_the_reference_agent(transcript: dict[str, Any]) -> None:
    names = section(FILE, "handshake_transcripts.identities")
    agent_key, agent_name = _identity(names["agent"])
    controller_key, controller_name = _identity(names["controller"])
    known = _AGENT_KNOWS.get(transcript["name"], (ROLE_CONTROLLER, True))
    allow_list = _allow_list(controller_key, controller_name, *(known or (None, None)))
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
    if "error" in expected:
        with pytest.raises(ShellHandshakeError) as refused:
            asyncio.run(run)
        assert refused.value.code is _ERRORS[expected["error"]]
    else:
        established = asyncio.run(run)
        assert established.peer.device_id == expected["peer_device_id"]
        assert established.peer.friendly_name == expected["peer_friendly_name"]
        assert established.term is None  # reference controllers send no TERM
        assert established.cipher.role.name == "TARGET"
    assert channel.sent == _wire(transcript, "agent")  # byte-exact, nothing more
    record(FILE, SECTION, transcript["name"])


@pytest.mark.parametrize("transcript", _REPLAYABLE, ids=lambda t: t["name"])
def test_our_controller_replays_the_reference_controller(transcript: dict[str, Any]) -> None:
    names = section(FILE, "handshake_transcripts.identities")
    agent_key, agent_name = _identity(names["agent"])
    controller_key, controller_name = _identity(names["controller"])
    role = _CONTROLLER_KNOWS.get(transcript["name"], ROLE_TARGET)
    allow_list = _allow_list(agent_key, agent_name, role, None)
    requested = Device.new(
        device_id=agent_key.device_id,
        public_key=agent_key.public_key_b64,
        friendly_name=agent_name,
        role=ROLE_TARGET,
        added_at="2026-04-05T11:00:00.000Z",
    )
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
    elif "error" in expected:
        with pytest.raises(ShellHandshakeError) as refused:
            asyncio.run(run)
        assert refused.value.code is _ERRORS[expected["error"]]
    else:
        established = asyncio.run(run)
        assert established.peer.device_id == expected["peer_device_id"]
        assert established.cipher.role.name == "CONTROLLER"
    assert channel.sent == _wire(transcript, "controller")
    record(FILE, SECTION, transcript["name"])


def test_our_target_opens_the_recorded_session_frames() -> None:
    """The key our agent derives is the reference's: a recorded controller frame opens."""
    transcript = next(t for t in _REPLAYABLE if t["name"] == "success")
    names = section(FILE, "handshake_transcripts.identities")
    agent_key, agent_name = _identity(names["agent"])
    controller_key, controller_name = _identity(names["controller"])
    moment = parse_timestamp(transcript["fixed_clock"])
    rng = transcript["rng"]
    target_side = asyncio.run(
        run_target_handshake(
            ReplayChannel(_wire(transcript, "controller")),
            signer=agent_key,
            friendly_name=agent_name,
            allow_list=lambda: _allow_list(controller_key, controller_name, ROLE_CONTROLLER, True),
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
    names = section(FILE, "handshake_transcripts.identities")
    agent_key, agent_name = _identity(names["agent"])
    controller_key, controller_name = _identity(names["controller"])
    agent_frames = [f["json"] for f in transcript["session_frames"] if f["from"] == "agent"]
    channel = ReplayChannel(_wire(transcript, "agent") + agent_frames)
    requested = Device.new(
        device_id=agent_key.device_id,
        public_key=agent_key.public_key_b64,
        friendly_name=agent_name,
        role=ROLE_TARGET,
        added_at="2026-04-05T11:00:00.000Z",
    )
    rng = transcript["rng"]
    established = asyncio.run(
        run_controller_handshake(
            channel,
            signer=controller_key,
            friendly_name=controller_name,
            target=requested,
            allow_list=lambda: _allow_list(agent_key, agent_name, ROLE_TARGET, None),
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
