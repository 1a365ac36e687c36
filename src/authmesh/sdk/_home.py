"""Which amesh home the SDK uses: an explicit directory or the environment's.

An explicit directory replaces ``$AUTH_MESH_DIR`` only; ``$AMESH_PASSPHRASE_FILE``
still applies, as it does for the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from authmesh.store import AmeshHome

__all__ = ["resolve_home"]


def resolve_home(
    home: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> AmeshHome:
    """``home`` if given, else ``$AUTH_MESH_DIR`` / ``$AMESH_DIR`` / ``~/.amesh``."""
    env = dict(os.environ if environ is None else environ)
    if home is not None:
        env["AUTH_MESH_DIR"] = os.fspath(home)
    return AmeshHome.from_env(env)
