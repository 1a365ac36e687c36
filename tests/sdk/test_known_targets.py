"""The verifier remembers well-formed request-targets; any client chooses them, so the
memory stays bounded and never turns a refusal into an acceptance."""

from __future__ import annotations

from pathlib import Path

import pytest

from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.core._keys import PrivateKey
from authmesh.sdk import _verifier as verifier_module
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Rejection, Verifier
from tests.support.sdk import trusted_store, vector_key

K1, STRANGER = vector_key("K1"), vector_key("K2")


def _verifier(tmp_path: Path) -> Verifier:
    return Verifier(trusted_store(tmp_path / "home", [(K1, "controller", 1)]))


def _refused(verifier: Verifier, target: str, key: PrivateKey = STRANGER) -> int:
    header = RequestSigner(key).authorization("GET", target, EMPTY_BODY_SHA256)
    with pytest.raises(Rejection) as refused:
        verifier.verify("GET", target, header, "127.0.0.1", b"")
    return refused.value.status


def test_unknown_callers_cannot_grow_the_target_memory(tmp_path: Path) -> None:
    verifier = _verifier(tmp_path)
    for index in range(3 * verifier_module._KNOWN_TARGETS):
        assert _refused(verifier, f"/probe/{index}") == 401
        assert len(verifier._known_targets) <= verifier_module._KNOWN_TARGETS
    long_target = "/" + "a" * verifier_module._KNOWN_TARGET_CHARS
    assert _refused(verifier, long_target) == 401
    assert long_target not in verifier._known_targets


def test_a_malformed_target_stays_refused_and_a_known_one_still_verifies(
    tmp_path: Path,
) -> None:
    verifier = _verifier(tmp_path)
    for _ in range(2):
        assert _refused(verifier, "/admin/../public", K1) == 400
        header = RequestSigner(K1).authorization("GET", "/public", EMPTY_BODY_SHA256)
        assert verifier.verify("GET", "/public", header, "127.0.0.1", b"").device_id
    assert "/admin/../public" not in verifier._known_targets
