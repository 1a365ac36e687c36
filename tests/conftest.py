"""Fixtures shared by every test directory: real relay processes (see ``tests/relayproc.py``)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.relayproc import RelayProcess, start_relay

RelayFactory = Callable[..., RelayProcess]


def pytest_configure(config: pytest.Config) -> None:
    """Give child processes a working Ctrl-C even when the suite runs in the background.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    across exec, so the CLI tests that press Ctrl-C would see nothing; a handler (unlike
    SIG_IGN) is reset to the default in every child.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def relay_factory() -> Iterator[RelayFactory]:
    """``relay_factory(env)`` starts a ready relay with ``env`` added; every relay it started
    is stopped after the test (tests may stop or kill one themselves first)."""
    started: list[RelayProcess] = []

    def factory(env: Mapping[str, str] | None = None) -> RelayProcess:
        started.append(start_relay(env))
        return started[-1]

    yield factory
    for process in started:
        process.stop()


@pytest.fixture
def relay(relay_factory: RelayFactory) -> RelayProcess:
    """A fresh relay with default settings for one test, which may stop or kill it."""
    return relay_factory()
