"""Access to the reference vector files copied into ``tests/vectors``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"
SHARED_VECTOR_DIR = Path(__file__).resolve().parents[3] / "shared" / "vectors"
VECTOR_FILES = (
    "middleware.json",
    "pairing.json",
    "relay-transcripts.json",
    "sdk-cli.json",
    "sdk.json",
    "shell-relay.json",
    "shell.json",
)


@cache
def load(name: str) -> Any:
    """Parsed contents of one vector file (cached; treat as read-only)."""
    return json.loads((VECTOR_DIR / name).read_text(encoding="utf-8"))


def section(name: str, path: str) -> Any:
    """The value at a dotted ``path`` inside vector file ``name`` ('' is the root)."""
    node = load(name)
    for part in filter(None, path.split(".")):
        node = node[part]
    return node


def vector_lists(node: Any, prefix: str = "") -> dict[str, int]:
    """Every list of objects in a vector file, by dotted path, with its length."""
    found: dict[str, int] = {}
    if isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        found[prefix] = len(node)
    if isinstance(node, dict):
        for key, value in node.items():
            found.update(vector_lists(value, f"{prefix}.{key}" if prefix else key))
    return found
