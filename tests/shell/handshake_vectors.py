"""What the reference's shell handshake transcripts (``shell.json``) imply about each side.

The vectors record outcomes, not files: the allow list each side held is read from the
transcript names. Shared by the byte-level conformance test and the replay of our agent and
controller against the recorded peers.
"""

from __future__ import annotations

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET, AllowList, Device
from authmesh.core._keys import PrivateKey
from authmesh.core.shell._handshake import HandshakeErrorCode
from tests.support.vectorfiles import section

__all__ = [
    "AGENT_ALLOWS",
    "ALLOW_LIST_TIME",
    "CONTROLLER_ALLOWS",
    "REFERENCE_ERRORS",
    "agent_grant",
    "allow_list",
    "controller_grant",
    "entry",
    "identity",
    "parties",
]

FILE = "shell.json"
# When the allow-list entries were added: before every transcript's clock.
ALLOW_LIST_TIME = "2026-04-05T11:00:00.000Z"

Grant = tuple[str, bool | None] | None
"""(role, shell permission) of the peer's allow-list entry, or None when it is absent."""

# The agent's entry for the controller, where it is not (controller, shell granted).
AGENT_ALLOWS: dict[str, Grant] = {
    "agent_rejects_controller_without_shell_permission": (ROLE_CONTROLLER, False),
    "agent_rejects_controller_permissions_absent": (ROLE_CONTROLLER, None),
    "agent_rejects_peer_with_target_role": (ROLE_TARGET, True),
    "agent_rejects_unknown_controller": None,
}
# The controller's entry for the agent, where it is not (target, no shell field).
CONTROLLER_ALLOWS: dict[str, Grant] = {
    "controller_rejects_unknown_target": None,
    "controller_rejects_peer_with_controller_role": (ROLE_CONTROLLER, None),
}
REFERENCE_ERRORS = {
    "selfSig verification failed": HandshakeErrorCode.SELFSIG_INVALID,
    "Peer identity timestamp out of range": HandshakeErrorCode.TIMESTAMP_OUT_OF_RANGE,
    "Device not in allow list": HandshakeErrorCode.NOT_IN_ALLOW_LIST,
    "Device is not a controller": HandshakeErrorCode.NOT_A_CONTROLLER,
    "Device is not a target": HandshakeErrorCode.NOT_A_TARGET,
    "Shell access not granted for this device": HandshakeErrorCode.SHELL_NOT_GRANTED,
}


def agent_grant(transcript_name: str) -> Grant:
    """The agent's entry for the controller in this transcript."""
    return AGENT_ALLOWS.get(transcript_name, (ROLE_CONTROLLER, True))


def controller_grant(transcript_name: str) -> Grant:
    """The controller's entry for the agent in this transcript."""
    return CONTROLLER_ALLOWS.get(transcript_name, (ROLE_TARGET, None))


def identity(label: str) -> tuple[PrivateKey, str]:
    """The key and friendly name of the vector identity called ``label``."""
    entry = next(item for item in section(FILE, "identities") if item["name"] == label)
    return PrivateKey.from_scalar(bytes.fromhex(entry["private_key_hex"])), entry["friendly_name"]


def parties() -> tuple[tuple[PrivateKey, str], tuple[PrivateKey, str]]:
    """(key, friendly name) of the transcripts' agent, then of their controller."""
    names = section(FILE, "handshake_transcripts.identities")
    return identity(names["agent"]), identity(names["controller"])


def entry(peer: PrivateKey, name: str, role: str, shell: bool | None = None) -> Device:
    """The allow-list entry of ``peer`` under ``name``."""
    return Device.new(
        device_id=peer.device_id,
        public_key=peer.public_key_b64,
        friendly_name=name,
        role=role,
        added_at=ALLOW_LIST_TIME,
        shell=shell,
    )


def allow_list(peer: PrivateKey, name: str, grant: Grant) -> AllowList:
    """An allow list holding ``peer`` under ``name`` with ``grant`` (empty for None)."""
    empty = AllowList.empty(ALLOW_LIST_TIME)
    if grant is None:
        return empty
    return empty.with_device(entry(peer, name, *grant), ALLOW_LIST_TIME)
