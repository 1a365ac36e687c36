"""Errors of the remote shell: one user-facing sentence each, with a stable code."""

from __future__ import annotations

from authmesh.errors import AuthMeshError

__all__ = ["SessionEnded", "ShellError", "leaves"]


class ShellError(AuthMeshError):
    """A shell operation failed; ``str(error)`` names the problem and the fix."""


class SessionEnded(Exception):
    """The peer or the relay ended the session (``done``, ``peer_disconnected``, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of a task group's error, nested groups flattened, in order."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found
