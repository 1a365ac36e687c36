"""The root of every error a user of authmesh can cause.

Each family (store, pairing, shell, relay client, SDK) subclasses :class:`AuthMeshError`, so a
caller can catch one type. ``code`` is a stable identifier for programs; ``str(error)`` is one
sentence naming the problem and the fix, fit to show a user as is.
"""

from __future__ import annotations

__all__ = ["AuthMeshError"]


class AuthMeshError(Exception):
    """A failure with a stable ``code`` and a one-sentence message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self)
