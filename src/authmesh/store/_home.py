"""Where an amesh home lives and the files inside it (spec sdk-keystore.md §1.1, §1.2).

The directory is ``$AUTH_MESH_DIR``, else ``$AMESH_DIR`` (our alias), else
``~/.amesh``. An empty ``AUTH_MESH_DIR`` means "unset" here, where the reference
would use the current directory (W22).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from authmesh.store._errors import StoreError

__all__ = ["AmeshHome", "check_alias"]

_ALIAS = re.compile(r"[A-Za-z0-9_-]+")


def check_alias(alias: str) -> str:
    """Key aliases become file names: the reference's ``^[A-Za-z0-9_-]+$`` rule."""
    if not _ALIAS.fullmatch(alias):
        raise StoreError(
            "invalid_argument", f"Invalid key alias {alias!r}: use letters, digits, _ and -."
        )
    return alias


@dataclass(frozen=True)
class AmeshHome:
    """An amesh directory and the paths the reference uses inside it."""

    root: Path
    passphrase_override: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AmeshHome:
        """Resolve the home from ``AUTH_MESH_DIR``/``AMESH_DIR`` and ``AMESH_PASSPHRASE_FILE``."""
        env = os.environ if environ is None else environ
        configured = env.get("AUTH_MESH_DIR") or env.get("AMESH_DIR")
        root = Path(configured) if configured else Path.home() / ".amesh"
        passphrase_file = env.get("AMESH_PASSPHRASE_FILE")
        return cls(root, Path(passphrase_file) if passphrase_file else None)

    @property
    def identity_file(self) -> Path:
        return self.root / "identity.json"

    @property
    def allow_list_file(self) -> Path:
        return self.root / "allow_list.json"

    @property
    def passphrase_file(self) -> Path:
        return self.passphrase_override or self.root / ".passphrase"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def lock_file(self) -> Path:
        """Advisory lock taken by every writer of this home (ours only; see files.py)."""
        return self.root / ".amesh.lock"

    def key_file(self, alias: str) -> Path:
        return self.keys_dir / f"{check_alias(alias)}.key.json"

    def hmac_file(self, alias: str) -> Path:
        return self.keys_dir / f"{check_alias(alias)}.hmac"
