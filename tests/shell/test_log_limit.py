"""The agent's log of lines unauthenticated requests can cause is limited (issue 10 item 4)."""

from __future__ import annotations

import logging

import pytest

from authmesh.shell._log_limit import LimitedLog


def test_repeated_lines_are_limited_per_window_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = LimitedLog(logging.getLogger("limited"), burst=2, window=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "limited"):
        for number in range(100):
            log.warning("Session %d refused.", number)
        log.info("Other line.")
        now[0] = 61
        log.warning("Session %d refused.", 100)
    assert [record.getMessage() for record in caplog.records] == [
        "Session 0 refused.",
        "Session 1 refused.",
        "Other line.",
        "98 more like the next line in the last 61 s were not logged.",
        "Session 100 refused.",
    ]
