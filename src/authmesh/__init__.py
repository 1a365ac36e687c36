"""authmesh: device-bound machine-to-machine authentication.

The SDK's everyday names are importable from here (``authmesh.Client()``,
``authmesh.bootstrap_if_needed()``); they load lazily so that ``authmesh.core``
stays importable with nothing but ``cryptography`` installed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = [
    "AsyncClient",
    "AuthMeshAuth",
    "Client",
    "Verifier",
    "__version__",
    "bootstrap_if_needed",
]

try:
    __version__ = version("authmesh")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_SDK_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from authmesh import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'authmesh' has no attribute {name!r}")
