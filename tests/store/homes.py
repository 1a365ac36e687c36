"""Build amesh homes from the reference's recorded file listings (vector ``files`` maps)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_home(root: Path, files: Mapping[str, Mapping[str, Any]]) -> Path:
    """Create every recorded file (``content`` text or ``content_hex`` bytes) with its mode."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, spec in files.items():
        path = root / name
        mode = int(spec["mode"], 8)
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
            continue
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if "content_hex" in spec:
            path.write_bytes(bytes.fromhex(spec["content_hex"]))
        else:
            path.write_bytes(spec["content"].encode("utf-8"))
        os.chmod(path, mode)
    return root


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment with only this home and nothing inherited that changes store behaviour."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AUTH_MESH_", "AMESH_", "TPM2TOOLS_"))
    }
    env["AUTH_MESH_DIR"] = str(root)
    # Point tpm2-tools at a closed port so auto-detection never finds a real TPM.
    env["TPM2TOOLS_TCTI"] = "swtpm:host=127.0.0.1,port=1"
    env.update(extra)
    return env
