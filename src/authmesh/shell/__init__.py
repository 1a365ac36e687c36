"""The remote shell (opt-in extra ``authmesh[shell]``): agent, controller and their plumbing.

* :mod:`~authmesh.shell.agent` — ``amesh agent start``: relay registration, session
  admission, reliable teardown;
* :mod:`~authmesh.shell.agent_session` — one controller's shell on the agent, a task group
  driving :class:`~authmesh.core.shell.session.AgentSession`;
* :mod:`~authmesh.shell.controller` — ``amesh shell``: the local terminal side, a task group
  driving :class:`~authmesh.core.shell.session.ControllerSession`;
* :mod:`~authmesh.shell.handshake` — the shell handshake over a relay channel, both roles;
* :mod:`~authmesh.shell.channel` — session channels over the shared relay client;
* :mod:`~authmesh.shell.pty_process` — the shell on a PTY, killed as a whole session;
* :mod:`~authmesh.shell.recording` — asciicast v2 session recordings;
* :mod:`~authmesh.shell.log_limit` — rate-limited log lines for what anyone can trigger;
* :mod:`~authmesh.shell.errors` — the errors shared by the above.

The wire formats and cryptography live in :mod:`authmesh.core.shell`; see ``docs/shell.md``.
Import from the submodules; this package only groups them.
"""

__all__: list[str] = []
