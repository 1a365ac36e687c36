"""Fixtures shared by every test directory: real relay processes (see ``tests/relayproc.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.relayproc import RelayProcess, start_relay

RelayFactory = Callable[..., RelayProcess]


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
