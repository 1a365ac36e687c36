"""Pure primitives of the remote shell, wire-compatible with the reference (spec shell.md).

* :mod:`~authmesh.core.shell.frames` — session frames (DATA, RESIZE, EXIT, PING, PONG, COMMAND);
* :mod:`~authmesh.core.shell.cipher` — the direction-separated, counter-nonce session cipher;
* :mod:`~authmesh.core.shell.handshake` — ephemeral key agreement, identity envelope,
  transcript-bound selfSig and allow-list authorization;
* :mod:`~authmesh.core.shell.handshake_machine` — the handshake's steps as one object per side;
* :mod:`~authmesh.core.shell.challenge` — the agent's relay registration challenge;
* :mod:`~authmesh.core.shell.wire` — the relay JSON messages that carry all of the above.

Import from the submodules; this package only groups them.
"""

__all__: list[str] = []
