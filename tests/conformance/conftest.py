"""Enforces the vector ledger when the whole test suite ran.

Vectors are recorded by tests all over ``tests/`` (relay, sdk, cli ...), so the
counts are only checked when the run covered the whole ``tests`` directory.
"""

from __future__ import annotations

import pytest

from tests.conformance import ledger
from tests.support.ledger_run import whole_suite_selected


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not whole_suite_selected(session.config):
        return
    problems = ledger.shortfalls()
    if problems:
        session.config._authmesh_ledger_problems = problems  # type: ignore[attr-defined]
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = ledger.counts()
    problems = getattr(terminalreporter.config, "_authmesh_ledger_problems", [])
    if not counts and not problems:
        return
    terminalreporter.section("reference vectors exercised")
    for file, sections in counts.items():
        total = sum(sections.values())
        terminalreporter.write_line(f"{file}: {total} vectors in {len(sections)} sections")
    for problem in problems:
        terminalreporter.write_line(f"VECTOR COUNT DROPPED: {problem}", red=True)
