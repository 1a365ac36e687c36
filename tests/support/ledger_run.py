"""Whether a run covered the whole suite, so the vector ledger can be enforced."""

from __future__ import annotations

from pathlib import Path

import pytest

_TESTS_DIR = Path(__file__).resolve().parent.parent


def whole_suite_selected(config: pytest.Config) -> bool:
    if config.getoption("keyword") or config.getoption("markexpr"):
        return False
    args = [Path(a) for a in config.args] or [Path.cwd()]
    return any("::" not in str(a) and _TESTS_DIR.is_relative_to(a.resolve()) for a in args)
