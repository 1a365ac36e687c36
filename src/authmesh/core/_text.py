"""Text from peers, relays and files made safe to show."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with every character that is not printable shown as ``?``, cut at ``limit``
    characters (marked ``…``): names and error codes come from peers, relays and files, and
    must not drive a terminal (escape sequences, carriage returns) or forge log lines (S8)."""
    shown = text if limit is None else text[:limit]
    cleaned = "".join(c if c.isprintable() else "?" for c in shown)
    return cleaned + ("…" if limit is not None and len(text) > limit else "")
