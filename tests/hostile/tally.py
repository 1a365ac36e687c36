"""What a hostile-input campaign found: distinct inputs, crashes, and every broken rule."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Tally"]


@dataclass
class Tally:
    """Inputs are counted once per distinct byte string (with the channel they went on)."""

    inputs: set[bytes] = field(default_factory=set)
    crashes: int = 0
    failures: list[str] = field(default_factory=list)

    def tried(self, channel: str, data: bytes) -> None:
        self.inputs.add(channel.encode() + b"\0" + data)

    def fail(self, what: str) -> None:
        if len(self.failures) < 50:  # enough to diagnose, bounded for huge campaigns
            self.failures.append(what)

    @property
    def distinct(self) -> int:
        return len(self.inputs)
