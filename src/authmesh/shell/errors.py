"""Errors of the remote shell: one user-facing sentence each, with a stable code."""

from __future__ import annotations

__all__ = ["ChannelClosed", "SessionEnded", "ShellError"]


class ShellError(Exception):
    """A shell operation failed; ``str(error)`` names the problem and the fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ChannelClosed(Exception):
    """The relay socket carrying a session is gone."""


class SessionEnded(Exception):
    """The peer or the relay ended the session (``done``, ``peer_disconnected``, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
