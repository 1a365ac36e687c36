"""authmesh: device-bound machine-to-machine authentication.

The SDK's everyday names are importable from here (``authmesh.Client()``,
``authmesh.bootstrap_if_needed()``); they load lazily so that ``authmesh.core``
stays importable with nothing but ``cryptography`` installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AsyncClient", "AuthMeshAuth", "Client", "Verifier", "bootstrap_if_needed"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from authmesh import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'authmesh' has no attribute {name!r}")
