"""The pairing v3 code: one line a person reads aloud and types once.

``482913-5831-2075``: the first group is the **routing code**, the six digits of today's relay
``listen``/``connect`` frames (the only part the relay sees); the two groups after it are the
**password**, eight digits that only the two machines ever hold and that feed the PAKE.
Digits only, grouped 6-4-4, so it reads well aloud, survives chat apps and fits any terminal.
Spaces, dashes (ASCII or typographic) and dots between digits are ignored when parsing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from authmesh.core._otc import generate_otc
from authmesh.pairing._errors import PairingError

__all__ = [
    "PASSWORD_DIGITS",
    "ROUTING_DIGITS",
    "PairingCode",
]

ROUTING_DIGITS = 6
PASSWORD_DIGITS = 8  # 10^8 ~ 2^26.6 > the 2^20 floor: one online guess wins with p = 10^-8
_GROUPS = (ROUTING_DIGITS, 4, 4)
# Separators people and chat apps put between groups: space, tab, ASCII and Unicode dashes, dot.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212.]+")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: ``\d`` would accept other scripts' digits


@dataclass(frozen=True, slots=True)
class PairingCode:
    """A parsed v3 code; ``str()`` prints the canonical grouped form."""

    routing: str
    password: str

    @classmethod
    def generate(cls) -> PairingCode:
        password = f"{secrets.randbelow(10**PASSWORD_DIGITS):0{PASSWORD_DIGITS}d}"
        return cls(generate_otc(), password)

    @classmethod
    def parse(cls, text: str) -> PairingCode:
        """The code in ``text``, separators ignored; else ``short_code``/``invalid_v3_code``."""
        digits = _SEPARATORS.sub("", text)
        if len(digits) == ROUTING_DIGITS and _DIGITS.fullmatch(digits):
            raise PairingError("short_code")
        if len(digits) != ROUTING_DIGITS + PASSWORD_DIGITS or not _DIGITS.fullmatch(digits):
            raise PairingError("invalid_v3_code")
        return cls(digits[:ROUTING_DIGITS], digits[ROUTING_DIGITS:])

    def __str__(self) -> str:
        digits = self.routing + self.password
        groups, start = [], 0
        for size in _GROUPS:
            groups.append(digits[start : start + size])
            start += size
        return "-".join(groups)
