"""One error root: every user-facing error is an AuthMeshError, and the SDK exports them."""

from __future__ import annotations

import subprocess
import sys

import pytest

import authmesh
from authmesh import sdk
from authmesh.cli._exit_codes import ExitCode, exit_code_for
from authmesh.errors import AuthMeshError, MissingExtraError
from authmesh.pairing._errors import MESSAGES, PairingError
from authmesh.pairing._relay_client import relay_error
from authmesh.shell._errors import ShellError
from authmesh.store._errors import StoreError


def test_every_family_sits_under_the_root_and_the_sdk_exports_them() -> None:
    for family in (StoreError, PairingError, ShellError, sdk.SigningError, MissingExtraError):
        assert issubclass(family, AuthMeshError)
    for name in ("AuthMeshError", "StoreError", "PairingError", "SigningError"):
        assert name in sdk.__all__
        assert issubclass(getattr(sdk, name), AuthMeshError)
    assert sdk.StoreError is StoreError


def test_a_relay_without_its_shared_state_is_relay_trouble_not_a_refusal() -> None:
    error = relay_error({"type": "error", "code": "relay_unavailable"})
    assert error.code == "relay_unavailable" and "try again later" in str(error)
    assert exit_code_for(error.code) == ExitCode.RELAY


def test_relay_trouble_timeouts_and_refusals_have_their_own_status() -> None:
    assert exit_code_for("relay_unreachable") == exit_code_for("rate_limited") == ExitCode.RELAY
    assert exit_code_for("relay_unavailable") == ExitCode.RELAY
    assert exit_code_for("sas_mismatch") == exit_code_for("peer_rejected") == ExitCode.REFUSED
    assert exit_code_for("timeout") == exit_code_for("token_expired") == ExitCode.TIMED_OUT
    assert exit_code_for("no_identity") == ExitCode.FAILED
    assert exit_code_for("usage") == ExitCode.USAGE
    assert all(exit_code_for(code) != ExitCode.OK for code in MESSAGES)


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("authmesh.sdk.fastapi", "fastapi", "fastapi"),
        ("authmesh.sdk.django", "django", "django"),
        ("authmesh.sdk.redis_nonce", "redis", "redis"),
    ],
)
def test_a_missing_extra_names_the_extra_to_install(module: str, blocked: str, extra: str) -> None:
    program = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from authmesh.errors import MissingExtraError\n"
        f"try:\n    import {module}\nexcept MissingExtraError as error:\n"
        "    print(error.code, error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("missing_extra ")
    assert f"pip install 'authmesh[{extra}]'" in result.stdout


def test_version_is_exposed() -> None:
    assert authmesh.__version__ and authmesh.__version__[0].isdigit()
