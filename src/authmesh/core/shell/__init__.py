"""Pure core of the remote shell, wire-compatible with the reference (spec shell.md).

Meant to be used — each side of a session as a sans-I/O object (event and ``now`` in,
actions out), see ``docs/shell.md``:

* :class:`ControllerHandshake` / :class:`TargetHandshake` — the handshake's steps, ending in
  an :class:`Established` session key (failures: :class:`ShellHandshakeError`);
* :class:`ControllerSession` / :class:`AgentSession` — frame dispatch, keepalive and idle
  deadlines, and the :class:`Outcome` that says why a session ended;
* :class:`ShellCipher` — the direction-separated, counter-nonce session cipher;
* :class:`Frame`, :class:`FrameType` and :func:`decode_frame` — the session frames.

The modules named ``_*.py`` are internal: their names may change without notice.
"""

from authmesh.core.shell._cipher import ShellCipher
from authmesh.core.shell._frames import Frame, FrameType, decode_frame
from authmesh.core.shell._handshake import ShellHandshakeError
from authmesh.core.shell._handshake_machine import (
    ControllerHandshake,
    Established,
    TargetHandshake,
)
from authmesh.core.shell._session import AgentSession, ControllerSession, Outcome

__all__ = [
    "AgentSession",
    "ControllerHandshake",
    "ControllerSession",
    "Established",
    "Frame",
    "FrameType",
    "Outcome",
    "ShellCipher",
    "ShellHandshakeError",
    "TargetHandshake",
    "decode_frame",
]
