"""Fixtures shared by every test directory: real relay processes (see
``tests/support/relayproc.py``) and a private redis-server (see ``tests/support/redisproc.py``)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import settings

from tests.support.redisproc import RedisServer
from tests.support.relayproc import RelayFactory, RelayProcess, start_relay

# The gating run is reproducible: the same examples on every machine, so CI cannot turn red
# on a draw nobody can replay. `HYPOTHESIS_PROFILE=explore` searches wider and at random; run
# it when touching parsers and turn what it finds into @example cases.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", max_examples=5_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
def fresh_relay(relay_factory: RelayFactory) -> RelayProcess:
    """A fresh relay with default settings for one test, which may stop or kill it."""
    return relay_factory()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (without persistence). A test that stops it must
    start it again; tests that need it down for a while start their own RedisServer."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
