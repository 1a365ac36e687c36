"""authmesh: device-bound machine-to-machine authentication.

The SDK's everyday names are importable from here (``authmesh.Client()``,
``authmesh.bootstrap_if_needed()``); they load lazily so that ``authmesh.core``
stays importable with nothing but ``cryptography`` installed. :class:`AuthMeshError` is the
root of every error a user can cause (:mod:`authmesh.errors`).

Each package says in its ``__init__`` what is meant to be used: :mod:`authmesh.core` (pure
formats and crypto), :mod:`authmesh.core.shell`, :mod:`authmesh.store`,
:mod:`authmesh.pairing`, :mod:`authmesh.sdk` (with its framework adapters as submodules),
:mod:`authmesh.shell`, :mod:`authmesh.relay` and :mod:`authmesh.cli`. Modules named ``_*.py``
are internal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = [
    "AsyncClient",
    "AuthMeshAuth",
    "AuthMeshError",
    "Client",
    "Verifier",
    "__version__",
    "bootstrap_if_needed",
]

try:
    __version__ = version("authmesh")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_SDK_NAMES = frozenset(__all__) - {"__version__", "AuthMeshError"}


def __getattr__(name: str) -> Any:
    if name == "AuthMeshError":
        from authmesh.errors import AuthMeshError

        return AuthMeshError
    if name in _SDK_NAMES:
        from authmesh import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'authmesh' has no attribute {name!r}")
