"""Fixtures for the ``amesh`` CLI tests: amesh homes, running the real CLI, a real relay."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support.cli import SHARED_RELAY_ENV, AmeshRunner, Device, make_home
from tests.support.relayproc import RelayProcess, start_relay


@pytest.fixture
def home() -> Iterator[Path]:
    path = make_home()
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def homes() -> Iterator[Callable[[], Path]]:
    """A factory of fresh amesh dirs, all removed afterwards."""
    made: list[Path] = []

    def factory() -> Path:
        made.append(make_home())
        return made[-1]

    yield factory
    for path in made:
        shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def amesh(tmp_path_factory: pytest.TempPathFactory) -> AmeshRunner:
    scratch = tmp_path_factory.mktemp("amesh-scratch")
    empty_bin = tmp_path_factory.mktemp("empty-bin")
    return AmeshRunner(scratch=scratch, no_tpm_path=str(empty_bin))


@pytest.fixture(scope="module")
def module_relay() -> Iterator[RelayProcess]:
    """A relay process shared by the tests of one module (they must not stop it; a test that
    needs to kill its relay takes one from ``relay_factory``)."""
    process = start_relay(SHARED_RELAY_ENV)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def identity_templates(
    amesh: AmeshRunner, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """One home per device name made by the real ``amesh init``, created once per session."""
    made: dict[str, Path] = {}

    def template(name: str) -> Path:
        if name not in made:
            home = tmp_path_factory.mktemp("template") / "home"
            home.mkdir(mode=0o700)
            result = amesh(["init", "--name", name, "--backend", "encrypted-file"], home)
            assert result.returncode == 0, result.stderr
            made[name] = home
        return made[name]

    return template


@pytest.fixture
def make_device(
    amesh: AmeshRunner, homes: Callable[[], Path], identity_templates: Callable[[str], Path]
) -> Callable[[str], Device]:
    """A fresh home holding a copy of the session's identity called ``name``."""

    def factory(name: str) -> Device:
        home = homes()
        shutil.copytree(identity_templates(name), home, dirs_exist_ok=True)
        identity = json.loads((home / "identity.json").read_text())
        return Device(home=home, env=amesh.env(home), device_id=identity["deviceId"], name=name)

    return factory


@pytest.fixture
def children() -> Iterator[list[pexpect.spawn]]:
    spawned: list[pexpect.spawn] = []
    yield spawned
    for child in spawned:
        if child.isalive():
            child.terminate(force=True)
