"""Fixed identities and a watching controller for the pairing tests.

The ``fresh_relay`` and ``relay_factory`` fixtures are in ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest

from authmesh.core._keys import PrivateKey


@pytest.fixture
def target_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def controller_key() -> PrivateKey:
    return PrivateKey.generate()
