"""The root of every error a user of authmesh can cause.

Each family (store, pairing, shell, relay client, SDK) subclasses :class:`AuthMeshError`, so a
caller can catch one type. ``code`` is a stable identifier for programs; ``str(error)`` is one
sentence naming the problem and the fix, fit to show a user as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["AuthMeshError", "MissingExtraError", "requires_extra"]


class AuthMeshError(Exception):
    """A failure with a stable ``code`` and a one-sentence message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self)


class MissingExtraError(AuthMeshError, ImportError):
    """An optional module was imported without the extra that installs what it needs."""


@contextmanager
def requires_extra(extra: str, feature: str) -> Iterator[None]:
    """Wrap the imports of an optional module: a missing package names the extra to install.

    ``with requires_extra("fastapi", "authmesh.sdk.fastapi"): from fastapi import Request``
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "missing_extra",
            f"{feature} needs the {exc.name or 'missing'} package; install it with "
            f"pip install 'authmesh[{extra}]'.",
        ) from exc
